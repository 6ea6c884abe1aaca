"`from minifast.vision.all import *`: the one star-import for notebooks, complete and clean."
import subprocess
import sys

import minifast.vision.all as vision_all


def _star():
    ns = {}
    exec('from minifast.vision.all import *', ns)
    ns.pop('__builtins__')
    return ns


def test_star_import_gives_exactly_all_and_nothing_private():
    ns = _star()
    assert set(ns) == set(vision_all.__all__)
    assert not [n for n in ns if n.startswith('_')]


def test_lite0_model_and_augmentation_matrices_are_exported():
    from minifast.vision.augment_batch import crop_mat, dihedral_mat, flip_mat, perspective_mat, rotate_mat, zoom_mat
    from minifast.vision.models import efficientnet_lite as lite
    from minifast.vision.learner import Arch
    ns = _star()
    for name, obj in [('EfficientNetLite0', lite.EfficientNetLite0), ('lite0_state_dict', lite.lite0_state_dict),
                      ('lite0_body', lite.lite0_body), ('LITE0_STATS', lite.LITE0_STATS), ('rotate_mat', rotate_mat),
                      ('zoom_mat', zoom_mat), ('flip_mat', flip_mat), ('dihedral_mat', dihedral_mat),
                      ('crop_mat', crop_mat), ('perspective_mat', perspective_mat)]:
        assert ns[name] is obj, name
    assert isinstance(ns['efficientnet_lite0'], Arch), "the Arch for vision_learner, not the model module's function"


def test_no_name_is_shadowed_by_a_later_module():
    for m in vision_all._modules:
        for name in m.__all__:
            assert getattr(vision_all, name) is getattr(m, name), f"{name} of {m.__name__} is shadowed in vision.all"


def test_star_import_in_a_fresh_process():
    code = ("from minifast.vision.all import *\n"
            "m = EfficientNetLite0(num_classes=3).eval()\n"
            "import torch\n"
            "assert lite0_body(m)(torch.zeros(1, 3, 32, 32)).shape == (1, 1280, 1, 1)\n"
            "assert rotate_mat(torch.tensor([90.])).shape == (1, 3, 3)\n")
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


def test_star_import_leaves_the_heavy_libraries_unloaded():
    """The import is what a notebook pays first (target: 0.3 s after torch): torchvision,
    matplotlib and pandas load when used."""
    code = ("import sys, torch\nfrom minifast.vision.all import *\n"
            "print(sorted(m for m in ('torchvision', 'matplotlib', 'pandas', 'tqdm.notebook') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]', f"loaded at import time: {out.strip()}"
    # and they still load when they are needed
    code = ("import sys\nfrom minifast.vision.all import *\nm = EfficientNetLite0().train()\n"
            "import torch; m(torch.zeros(2, 3, 32, 32))\nprint('torchvision' in sys.modules)")
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          check=True).stdout.strip() == 'True'
