"fastai's vision names, as course code spells them after `from minifast.vision.all import *`."
import pandas as pd
import pytest
import torch

from minifast.vision.all import (CategoryBlock, DataBlock, ImageBlock, ImageDataLoaders, Normalize, PadMode,
                                 PILImage, PILImageBW, RandomResizedCrop, Resize, ResizeMethod, TensorImage,
                                 get_image_files, image2tensor, parent_label, plt)
from minifast.export import _describe_tfms, _rebuild_tfms


@pytest.mark.parametrize('method', [ResizeMethod.Squish, ResizeMethod.Crop, ResizeMethod.Pad])
def test_resize_method_constants_are_accepted_by_resize(colour_folder, method):
    img = PILImage.create(colour_folder/'red'/'red_3.jpg')
    out = Resize((20, 30), method=method, pad_mode=PadMode.Zeros)(img)
    assert isinstance(out, PILImage) and out.size == (30, 20)


def test_random_resized_crop_as_item_transform_returns_a_pilimage(colour_folder):
    img = PILImage.create(colour_folder/'red'/'red_3.jpg')
    gen = torch.Generator().manual_seed(0)
    assert isinstance(RandomResizedCrop(16)(img, split_idx=0, generator=gen), PILImage)
    assert isinstance(RandomResizedCrop(16)(img, split_idx=1), PILImage)


def test_normalize_without_arguments_takes_the_stats_of_the_first_batch(colour_folder):
    dls = ImageDataLoaders.from_folder(colour_folder, valid_pct=0.25, seed=0, item_tfms=Resize(16),
                                       batch_tfms=Normalize(), bs=8, device='cpu')
    xb, _ = dls.train.one_batch()
    assert torch.allclose(xb.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    norm = [t for t in dls.train.after_batch[0] if isinstance(t, Normalize)][0]
    assert len(norm.mean) == 3 and all(s > 0 for s in norm.std)


def test_normalize_from_stats_takes_fastai_arguments():
    norm = Normalize.from_stats([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], dim=1, ndim=4, cuda=False)
    assert torch.allclose(norm(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))


def test_pilimagebw_block_gives_one_channel_batches_and_exports_its_class(colour_folder):
    dblock = DataBlock(blocks=(ImageBlock(cls=PILImageBW), CategoryBlock), get_items=get_image_files,
                       get_y=parent_label, item_tfms=Resize(16))
    dls = dblock.dataloaders(colour_folder, bs=4, device='cpu', seed=0)
    assert dls.one_batch()[0].shape == (4, 1, 16, 16)
    fname = colour_folder/'red'/'red_0.jpg'
    assert image2tensor(PILImageBW.create(fname)).shape[0] == 1
    # what an export file records of the type transforms rebuilds a grey loader (vision_learner has no n_in yet)
    rebuilt = _rebuild_tfms(_describe_tfms(dls.valid.dataset.dsets.pipelines[0], 'type'))
    assert rebuilt[-1].cls is PILImageBW and rebuilt[-1].draft_size == 16


def test_tensorimage_show_draws_on_the_given_axis(colour_folder):
    fig, ax = plt.subplots()
    t = TensorImage(image2tensor(PILImage.create(colour_folder/'red'/'red_0.jpg')))
    assert t.show(ctx=ax) is ax and len(ax.images) == 1
    plt.close(fig)


def test_from_csv_reads_labels_csv_as_fastai_documents(colour_folder):
    files = get_image_files(colour_folder)
    pd.DataFrame({'name': [f.relative_to(colour_folder).as_posix() for f in files],
                  'label': [parent_label(f) for f in files]}).to_csv(colour_folder/'labels.csv', index=False)
    dls = ImageDataLoaders.from_csv(colour_folder, csv_fname='labels.csv', header='infer', delimiter=None,
                                    item_tfms=Resize(16), bs=4, device='cpu', seed=0)
    assert list(dls.vocab) == ['blue', 'red'] and len(dls.train_ds) + len(dls.valid_ds) == len(files)
