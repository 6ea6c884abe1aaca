"""minifast against fastai 2.8.12 on the same chapter-5 workflow, same data, same seeds, same threads.

    .venv/bin/python benchmarks/bench_vs_fastai.py                 # full CPU run; writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench_vs_fastai.py --quick         # a few minutes: checks the harness only
    .venv/bin/python benchmarks/bench_vs_fastai.py --device cuda   # resnet34, 224 px from 460, fp16, 8 workers
    # with fastai importable by that interpreter (tools/gpu_check.sh on a lent GPU machine); ~6,000 images on CUDA:
    python3 benchmarks/bench_vs_fastai.py --device cuda --fastai-python python3

fastai lives in its own virtual environment, `benchmarks/.venv-fastai` (git-ignored), created on the first run
with the same torch and torchvision versions as the environment running this script, then
`pip install fastai==2.8.12`. minifast runs with the interpreter running this script. Where nothing can
be installed (a GPU machine without internet), `--fastai-python` names an interpreter that already imports
fastai 2.8.12 (installed from carried wheels); the installed-size rows are then left out, since they need
each library in an environment of its own.

Every measurement is a fresh process per library (this file again, with `--child`), in strict alternation
minifast, fastai, minifast, fastai...; each process imports torch, sets `torch.set_num_threads(--threads)`,
times `from <lib>.vision.all import *`, does one job, prints one `RESULT {json}` line and exits.
Progress bars are off in both (`learn.no_bar()`); both get their seeds the same way (`seed_all`).
See benchmarks/README.md for what each row measures.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASTAI_VERSION = '2.8.12'
FASTAI_VENV = ROOT/'benchmarks'/'.venv-fastai'
LIBS = ('minifast', 'fastai')
BASELINE = ('torch', 'torchvision')  # installed size and package count are counted beyond these and what they require


# ---- configuration -------------------------------------------------------------------------------
def config(args) -> dict:
    "Everything the children need, from the command line; `--device cuda` switches to the chapter-5 GPU sizes."
    gpu = args.device == 'cuda'
    c = dict(device=args.device, threads=args.threads, bs=64, seed=0,
             arch='resnet34' if gpu else 'resnet18', presize=460 if gpu else 160, size=224 if gpu else 128,
             fp16=gpu, n_per_breed=162 if gpu else 40,  # 37 x 162 = 5,994 images, about Pets' 7,349 less its test split
             pass_workers=[0, 8] if gpu else [0, 2], train_workers=8 if gpu else 2,
             passes=2, import_runs=5, lr_find_it=100, ft_epochs=2,
             err_presize=460 if gpu else 80, err_size=224 if gpu else 64, err_epochs=4, err_seeds=[0, 1, 2],
             ceiling_steps=30 if gpu else 5, valley_seeds=[0, 1, 2])
    if args.quick:
        c.update(valley_seeds=[0], n_per_breed=8, passes=1, import_runs=2, lr_find_it=20, ft_epochs=1, err_epochs=1,
                 err_seeds=[0],
                 ceiling_steps=3 if not gpu else 10)
    for k in ('n_per_breed', 'err_epochs', 'ft_epochs', 'import_runs', 'passes', 'lr_find_it', 'train_workers'):
        if getattr(args, k) is not None: c[k] = getattr(args, k)
    if args.pass_workers is not None:
        c['pass_workers'] = [int(w) for w in args.pass_workers.split(',')]
        if len(c['pass_workers']) != 2: raise SystemExit('--pass-workers: two numbers, e.g. 0,8')
    c['sizes'] = args.fastai_python is None   # sizes need each library in its own environment
    if args.err_seeds is not None: c['err_seeds'] = [int(s) for s in args.err_seeds.split(',')]
    if args.valley_seeds is not None: c['valley_seeds'] = [int(s) for s in args.valley_seeds.split(',')]
    c['only'] = args.only
    return c


# ---- the fastai environment ----------------------------------------------------------------------
def _run(cmd, **kw):
    print('$', ' '.join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), check=True, **kw)

def _version(python, code) -> str:
    return subprocess.run([str(python), '-c', code], check=True, capture_output=True, text=True).stdout.strip()

def ensure_fastai_venv(python=sys.executable, fa_python=None) -> Path:
    """`benchmarks/.venv-fastai/bin/python` with fastai 2.8.12 and the torch/torchvision of `python`, created if
    missing;
    or `fa_python`, checked the same way but never installed into."""
    import torch
    import torchvision
    torch_v, tv_v = (m.__version__.split('+')[0] for m in (torch, torchvision))
    given = fa_python is not None
    fa_python = Path(fa_python) if given else FASTAI_VENV/'bin'/'python'
    if not given and not fa_python.exists():
        _run([python, '-m', 'venv', FASTAI_VENV])
        # Same torch as minifast, named first so pip does not pick another one to satisfy fastai's torch<3,>=1.10.
        _run([fa_python, '-m', 'pip', 'install', '--disable-pip-version-check', f'torch=={torch_v}',
              f'torchvision=={tv_v}', f'fastai=={FASTAI_VERSION}'])
    got = _version(fa_python, 'import fastai, torch, torchvision; '
                              'print(fastai.__version__, torch.__version__.split("+")[0], '
                              'torchvision.__version__.split("+")[0])').split()
    if got != [FASTAI_VERSION, torch_v, tv_v]:
        fix = 'give it fastai 2.8.12 and the same torch' if given else 'delete the folder and run again to rebuild it'
        raise RuntimeError(f'{fa_python} has fastai/torch/torchvision {got}, '
                           f'expected {[FASTAI_VERSION, torch_v, tv_v]}: {fix}.')
    return fa_python


# ---- the children ----------------------------------------------------------------------------------
def seed_all(seed):
    "The same global seeds for both libraries (fastai draws its shuffles and augmentations from these)."
    import random
    import numpy as np
    import torch
    random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)


class Lib:
    "The chapter-5 calls, written once for both libraries: `ns` is the namespace of `from <lib>.vision.all import *`."
    def __init__(self, name, ns, c):
        self.name, self.ns, self.c = name, ns, c
        import torch
        self.device = torch.device(c['device'])

    def sync(self):
        import torch
        if self.device.type == 'cuda': torch.cuda.synchronize(self.device)

    def dataloaders(self, presize, size, workers, seed):
        g = self.ns
        pets = g['DataBlock'](blocks=(g['ImageBlock'], g['CategoryBlock']), get_items=g['get_image_files'],
                              splitter=g['RandomSplitter'](seed=42),
                              get_y=g['using_attr'](g['RegexLabeller'](r'(.+)_\d+.jpg$'), 'name'),
                              item_tfms=g['Resize'](presize), batch_tfms=g['aug_transforms'](size=size, min_scale=0.75))
        kw = dict(bs=self.c['bs'], num_workers=workers, device=self.device)
        # minifast's loaders take their own seed; fastai's come from the global RNGs
        if self.name == 'minifast': kw['seed'] = seed
        return pets.dataloaders(Path(self.c['data'])/'images', **kw)

    def learner(self, dls, path):
        g = self.ns
        learn = g['vision_learner'](dls, g[self.c['arch']], pretrained=False, metrics=g['error_rate'], path=path)
        if self.c['fp16']: learn.to_fp16()
        return learn

    def timer(self, log):
        "A callback appending (event, seconds since the previous event) for epochs and their training part."
        lib, clock = self, time.perf_counter
        state = {}
        class BenchTimer(self.ns['Callback']):
            order = 100
            def before_epoch(self): lib.sync(); state['epoch'] = clock()
            def before_train(self): state['train'] = clock()
            def after_train(self): lib.sync(); log.append(('train', clock() - state['train']))
            def after_epoch(self): lib.sync(); log.append(('epoch', clock() - state['epoch']))
        return BenchTimer()

    def error_rate(self, learn):
        "Error rate on the validation set, from `validate()` (the same call in both: `[valid_loss, error_rate]`)."
        with learn.no_bar(): return float(learn.validate()[1])


def job_import(lib, c, out): pass  # the import is timed for every child

def job_pass(lib, c, out):
    "DataLoaders creation, one_batch, then images/s of passes over dls.train with `workers` processes."
    seed_all(c['seed'])
    t = time.perf_counter()
    dls = lib.dataloaders(c['presize'], c['size'], c['workers'], c['seed'])
    out['dls_s'] = time.perf_counter() - t
    batch_times = []
    for _ in range(4):  # the first call includes one-off set-up; the row is the median of the other three
        t = time.perf_counter(); xb, yb = dls.one_batch(); lib.sync(); batch_times.append(time.perf_counter() - t)
    out['one_batch_first_s'], out['one_batch_s'] = batch_times[0], statistics.median(batch_times[1:])
    out['one_batch_shape'], out['one_batch_dtype'] = list(xb.shape), str(xb.dtype)
    rates = []
    # the first pass warms up (fastai starts new workers every pass; minifast keeps them)
    for _ in range(c['passes'] + 1):
        t, n = time.perf_counter(), 0
        for xb, yb in dls.train: n += len(xb)
        lib.sync()
        rates.append(n / (time.perf_counter() - t))
    out['pass_warmup_ips'], out['pass_ips'], out['pass_images'] = rates[0], statistics.median(rates[1:]), n

def job_lr_find(lib, c, out):
    seed_all(c['seed'])
    dls = lib.dataloaders(c['presize'], c['size'], c['train_workers'], c['seed'])
    seed_all(c['seed'])  # fastai's RandomSplitter(seed=42) reseeds torch's global RNG: seed again for the model
    with tempfile.TemporaryDirectory() as tmp:
        learn = lib.learner(dls, tmp)
        with learn.no_bar():
            t = time.perf_counter()
            sug = learn.lr_find(num_it=c['lr_find_it'], show_plot=False)
            lib.sync()
            out['lr_find_s'] = time.perf_counter() - t
    out['valley'] = float(sug.valley)
    # the recorded curve, so that one rule can be applied to both libraries' curves (the valleys above differ in both)
    out['lr_curve'] = [[float(v) for v in learn.recorder.lrs], [float(v) for v in learn.recorder.losses]]
    out['lr_find_iters'] = len(learn.recorder.lrs)
    out['lr_find_s_per_it'] = out['lr_find_s'] / out['lr_find_iters']

def job_fine_tune(lib, c, out):
    "fine_tune(ft_epochs): epoch and training times (first epoch frozen), final error rate, peak memory."
    import torch
    seed_all(c['seed'])
    dls = lib.dataloaders(c['presize'], c['size'], c['train_workers'], c['seed'])
    seed_all(c['seed'])
    if lib.device.type == 'cuda': torch.cuda.reset_peak_memory_stats(lib.device)
    log = []
    with tempfile.TemporaryDirectory() as tmp:
        learn = lib.learner(dls, tmp)
        timer = lib.timer(log)
        learn.add_cb(timer)
        with learn.no_bar():
            t = time.perf_counter()
            learn.fine_tune(c['ft_epochs'])
            lib.sync()
            out['fine_tune_s'] = time.perf_counter() - t
        learn.remove_cb(timer)  # it times the training epochs only
        out['error_rate'] = lib.error_rate(learn)
    epochs, trains = [s for e, s in log if e == 'epoch'], [s for e, s in log if e == 'train']
    n_train = len(dls.train) * c['bs']  # both drop the last partial training batch
    out['epoch_frozen_s'], out['epoch_s'] = epochs[0], statistics.mean(epochs[1:])
    out['train_ips'] = n_train / statistics.mean(trains[1:])  # unfrozen epochs: the ceiling trains everything too
    if lib.device.type == 'cuda': out['max_cuda_mb'] = torch.cuda.max_memory_allocated(lib.device) / 2**20

def job_error(lib, c, out):
    seed_all(c['seed'])
    dls = lib.dataloaders(c['err_presize'], c['err_size'], c['train_workers'], c['seed'])
    seed_all(c['seed'])
    with tempfile.TemporaryDirectory() as tmp:
        learn = lib.learner(dls, tmp)
        with learn.no_bar(): learn.fine_tune(c['err_epochs'])
        out['error_rate'] = lib.error_rate(learn)

def job_ceiling(c, out):
    """Training throughput of the same network (torchvision body + the fastai/minifast default head) on random
    normalised images already on the device: no data loading, no library; Adam, fp16 autocast on CUDA."""
    import torch
    import torchvision
    from torch import nn
    if c.get('keep_freed'):  # glibc keeps freed large blocks, as minifast sets at import (fastai does not)
        from minifast.core import keep_freed_memory
        if not keep_freed_memory(): raise RuntimeError('keep_freed_memory() could not be applied here (not glibc?)')
    torch.manual_seed(0)
    dev, bs, size = torch.device(c['device']), c['bs'], c['size']
    body = nn.Sequential(*list(getattr(torchvision.models, c['arch'])(weights=None).children())[:-2])
    nf = body(torch.zeros(2, 3, 64, 64)).shape[1] * 2

    class ConcatPool(nn.Module):
        def forward(self, x):
            return torch.cat([nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1)
    head = nn.Sequential(ConcatPool(), nn.Flatten(), nn.BatchNorm1d(nf), nn.Dropout(0.25),
                         nn.Linear(nf, 512, bias=False),
                         nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, 37, bias=False))
    model = nn.Sequential(body, head).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler('cuda', enabled=c['fp16'])
    x, y = torch.randn(bs, 3, size, size, device=dev), torch.randint(0, 37, (bs,), device=dev)
    def step():
        with torch.autocast(dev.type, dtype=torch.float16, enabled=c['fp16']):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt); scaler.update()
    for _ in range(3): step()
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    t = time.perf_counter()
    for _ in range(c['ceiling_steps']): step()
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    out['ceiling_ips'] = bs * c['ceiling_steps'] / (time.perf_counter() - t)

def job_size(lib_name, out):
    """Packages and bytes that `lib_name` installs beyond torch and torchvision: the closure of its requirements
    (markers evaluated, extras followed) minus the closure of torch's and torchvision's, from this environment's
    metadata."""
    import re
    from importlib import metadata
    try: from packaging.requirements import Requirement
    except ImportError: from pip._vendor.packaging.requirements import Requirement
    norm = lambda n: re.sub(r'[-_.]+', '-', n).lower()
    dists = {}
    for d in metadata.distributions(): dists.setdefault(norm(d.metadata['Name']), d)

    def closure(roots):
        seen, todo, missing = {}, [(norm(r), ()) for r in roots], set()
        while todo:
            name, extras = todo.pop()
            if name not in dists: missing.add(name); continue
            if name in seen and set(extras) <= seen[name]: continue
            seen[name] = seen.get(name, set()) | set(extras)
            for r in dists[name].requires or []:
                req = Requirement(r)
                if req.marker is None or any(req.marker.evaluate({'extra': e}) for e in ('',) + tuple(seen[name])):
                    todo.append((norm(req.name), tuple(req.extras)))
        return set(seen), missing

    def size(name):
        d = dists[name]
        total = sum(os.path.getsize(p) for f in (d.files or []) if os.path.isfile(p := d.locate_file(f)))
        direct = d.read_text('direct_url.json')
        # an editable install: count its source package
        if direct and json.loads(direct).get('dir_info', {}).get('editable'):
            src = Path(json.loads(direct)['url'].removeprefix('file://'))/norm(name).replace('-', '_')
            total += sum(p.stat().st_size for p in src.rglob('*') if p.is_file())
        return total

    base, _ = closure(BASELINE)
    lib, missing = closure([lib_name])
    extra = sorted(lib - base)
    out['packages'] = len(extra)
    sizes = {n: size(n) / 1e6 for n in extra}
    out['installed_mb'] = sum(sizes.values())
    out['package_list'] = extra
    out['package_mb'] = sizes
    out['subtracted'] = sorted(base)
    out['missing_requirements'] = sorted(missing)  # required but not installed (should be empty)

JOBS = {'import': job_import, 'pass': job_pass, 'lr_find': job_lr_find, 'fine_tune': job_fine_tune, 'error': job_error}

def child(spec):
    import resource
    out = {'load_at_start': os.getloadavg()}
    if spec['job'] == 'size':
        job_size(spec['lib'], out)
    else:
        t = time.perf_counter()
        import torch
        out['torch_import_s'] = time.perf_counter() - t
        torch.set_num_threads(spec['threads'])
        if spec['job'] == 'ceiling':
            job_ceiling(spec, out)
        else:
            ns = {}
            t = time.perf_counter()
            exec(f"from {spec['lib']}.vision.all import *", ns)
            out['import_s'] = time.perf_counter() - t
            JOBS[spec['job']](Lib(spec['lib'], ns, spec), spec, out)
        out['max_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print('RESULT ' + json.dumps(out), flush=True)


# ---- the parent ------------------------------------------------------------------------------------
class Runner:
    def __init__(self, pythons, c, log_dir):
        self.pythons, self.c, self.log_dir, self.n = pythons, c, Path(log_dir), 0
        self.env = dict(os.environ, OMP_NUM_THREADS=str(c['threads']), MKL_NUM_THREADS=str(c['threads']),
                        PYTHONWARNINGS='ignore')

    def __call__(self, lib, job, **extra):
        spec = dict(self.c, lib=lib, job=job, **extra)
        self.n += 1
        log = self.log_dir/f'{self.n:03d}-{job}-{lib}.log'
        t = time.perf_counter()
        p = subprocess.run([str(self.pythons[lib]), __file__, '--child', json.dumps(spec)], cwd=tempfile.gettempdir(),
                           env=self.env, capture_output=True, text=True)
        log.write_text(f'$ {job} {lib} {extra}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}')
        lines = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
        if p.returncode or not lines:
            raise RuntimeError(f'{job} with {lib} failed (exit {p.returncode}); log: {log}\n{p.stderr[-3000:]}')
        res = json.loads(lines[-1][len('RESULT '):])
        print(f'  {job:<9} {lib:<8} {extra or ""} {time.perf_counter() - t:6.1f} s  '
              + ', '.join(f'{k}={v:.4g}' for k, v in res.items() if isinstance(v, float)), flush=True)
        return res

    def alternate(self, job, reps=1, **extra):
        "`reps` rounds of minifast then fastai; a list of results per library."
        res = {lib: [] for lib in LIBS}
        for _ in range(reps):
            for lib in LIBS: res[lib].append(self(lib, job, **extra))
        return res


def median_of(results, key): return statistics.median(r[key] for r in results)

def _measure_lr_find(run, c, m):
    print('lr_find', flush=True)
    res = run.alternate('lr_find')
    for lib in LIBS:
        for k in ('lr_find_s', 'valley', 'lr_find_iters', 'lr_find_s_per_it'): m[lib][k] = res[lib][0][k]
    from minifast.callback.schedule import valley  # this parent runs in minifast's venv
    for lib in LIBS:
        lrs, losses = res[lib][0]['lr_curve']
        m[lib]['valley_same_rule'] = valley(lrs, losses)[0]
    extra = [s for s in c['valley_seeds'] if s != c['seed']]
    if extra:   # one seed's curve is noisy: the suggestion moves 2x with rounding alone, so compare medians over seeds
        print(f'lr_find suggestion over seeds {c["valley_seeds"]}', flush=True)
        valleys = {lib: {c['seed']: m[lib]['valley']} for lib in LIBS}
        for s in extra:
            for lib in LIBS: valleys[lib][s] = run(lib, 'lr_find', seed=s)['valley']
        for lib in LIBS:
            m[lib]['valleys'] = valleys[lib]
            m[lib]['valley_median'] = statistics.median(valleys[lib].values())

def _put(m, res, key, name=None, agg=median_of):
    for lib in LIBS: m[lib][name or key] = agg(res[lib], key)

def _measure_fine_tune(run, c, m):
    """Epoch times and throughput of fine_tune, then the random-tensor ceiling: (ceiling, ceiling with freed blocks
    kept)."""
    print(f'fine_tune({c["ft_epochs"]})', flush=True)
    res = run.alternate('fine_tune')
    keys = ('epoch_frozen_s', 'epoch_s', 'train_ips', 'max_rss_mb', 'error_rate')
    keys += ('max_cuda_mb',) if c['fp16'] else ()
    for k in keys:
        _put(m, res, k, 'ft_error_rate' if k == 'error_rate' else k)
    print('ceiling: random tensors already on the device', flush=True)
    ceiling = run('minifast', 'ceiling')['ceiling_ips']   # plain torch: glibc's default allocator settings
    ceiling_kept = run('minifast', 'ceiling', keep_freed=True)['ceiling_ips']
    for lib in LIBS: m[lib]['ceiling_share'] = m[lib]['train_ips'] / ceiling
    return ceiling, ceiling_kept

def measure(run, c):
    m = {lib: {} for lib in LIBS}
    if c['only'] == 'lr_find':
        _measure_lr_find(run, c, m)
        return m, (float('nan'), float('nan'))
    if c['only'] == 'fine_tune':   # the GPU targets: epoch throughput and the share of the ceiling
        return m, _measure_fine_tune(run, c, m)
    if c['sizes']:
        print('installed size', flush=True)
        sizes = {lib: run(lib, 'size') for lib in LIBS}
        for lib in LIBS: m[lib].update(packages=sizes[lib]['packages'], installed_mb=sizes[lib]['installed_mb'],
                                       size_detail=sizes[lib])
    print('import (one discarded warm-up each, for the file cache)', flush=True)
    run.alternate('import')
    _put(m, run.alternate('import', reps=c['import_runs']), 'import_s')
    for w in c['pass_workers']:
        print(f'data: {w} workers', flush=True)
        res = run.alternate('pass', reps=1, workers=w)
        _put(m, res, 'pass_ips', f'pass_ips_{w}')
        if w == c['pass_workers'][0]:
            for k in ('dls_s', 'one_batch_s', 'one_batch_first_s'): _put(m, res, k)
    _measure_lr_find(run, c, m)
    ceiling = _measure_fine_tune(run, c, m)   # (glibc defaults, freed blocks kept)
    print(f'error rate: fine_tune({c["err_epochs"]}) at {c["err_size"]} px, seeds {c["err_seeds"]}', flush=True)
    errs = {lib: [] for lib in LIBS}
    for s in c['err_seeds']:
        for lib in LIBS: errs[lib].append(run(lib, 'error', seed=s)['error_rate'])
    for lib in LIBS: m[lib]['error_rate'], m[lib]['error_rates'] = statistics.mean(errs[lib]), errs[lib]
    return m, ceiling


# (label, key, format, direction, target on minifast/fastai) -- direction 'lower'/'higher' is what is better
def rows(c):
    w0, w1 = c['pass_workers']
    cpu = c['device'] != 'cuda'  # the speed targets of issue 7 for a 2-core CPU; on a GPU: throughput and ceiling
    return [
        ('import vision.all after torch (s)', 'import_s', '.2f', 'lower', ('abs', 0.3)),
        ('DataLoaders creation (s)', 'dls_s', '.2f', 'lower', None),
        ('one_batch (s, median of 3 after 1st)', 'one_batch_s', '.3f', 'lower', None),
        ('one_batch, first call (s)', 'one_batch_first_s', '.3f', 'lower', None),
        (f'pass over dls.train, {w0} workers (img/s)', f'pass_ips_{w0}', '.0f', 'higher',
         ('min', 2.0) if cpu else None),
        (f'pass over dls.train, {w1} workers (img/s)', f'pass_ips_{w1}', '.0f', 'higher', None),
        (f'lr_find, num_it={c["lr_find_it"]} (s)', 'lr_find_s', '.1f', 'lower', ('max', 0.6) if cpu else None),
        ('lr_find iterations recorded', 'lr_find_iters', '.0f', None, None),
        ('lr_find time per iteration (s)', 'lr_find_s_per_it', '.2f', 'lower', None),
        ('lr_find suggestion (valley)', 'valley', '.2e', None, ('within', 2.0)),
        ("valley by minifast's rule on each library's curve", 'valley_same_rule', '.2e', None, None),
        (f'lr_find suggestion, median over seeds {c["valley_seeds"]}', 'valley_median', '.2e', None, ('within', 2.0)),
        ('fine_tune: frozen epoch (s)', 'epoch_frozen_s', '.1f', 'lower', None),
        ('fine_tune: unfrozen epoch, mean (s)', 'epoch_s', '.1f', 'lower', ('max', 0.8) if cpu else None),
        ('training throughput, unfrozen (img/s)', 'train_ips', '.1f', 'higher', ('min', 2.0) if not cpu else None),
        ('share of the random-tensor ceiling', 'ceiling_share', '.0%', 'higher', ('abs_min', 0.8) if not cpu else None),
        (f'error rate after fine_tune({c["ft_epochs"]}), {c["size"]} px', 'ft_error_rate', '.3f', 'lower', None),
        (f'error rate, fine_tune({c["err_epochs"]}) at {c["err_size"]} px, mean of {len(c["err_seeds"])}',
         'error_rate', '.3f', 'lower', ('max', 1.0)),
        ('peak RSS, fine_tune process (MB)', 'max_rss_mb', '.0f', 'lower', None),
    ] + ([('peak CUDA memory allocated (MB)', 'max_cuda_mb', '.0f', 'lower', None)] if c['fp16'] else []) + [
        ('packages beyond torch/torchvision', 'packages', '.0f', 'lower', ('abs', 10)),
        ('installed size beyond torch/torchvision (MB)', 'installed_mb', '.0f', 'lower', ('abs', 150)),
    ]

def verdict(target, mf, fa):
    if target is None: return ''
    kind, v = target
    r = mf / fa if fa else float('inf')
    ok = {'abs': mf <= v, 'abs_min': mf >= v, 'min': r >= v, 'max': r <= v, 'within': 1 / v <= r <= v}[kind]
    text = {'abs': f'minifast <= {v:g}', 'abs_min': f'minifast >= {v:.0%}', 'min': f'ratio >= {v:g}',
            'max': f'ratio <= {v:g}', 'within': f'ratio in [1/{v:g}, {v:g}]'}[kind]
    return f"{text}: {'pass' if ok else 'FAIL'}"

def table(m, c) -> str:
    lines = ['| measurement | minifast | fastai 2.8.12 | minifast/fastai | target |', '|---|---:|---:|---:|---|']
    for label, key, fmt, _, target in rows(c):
        if key not in m['minifast']: continue   # not measured in this run (--only, or one seed)
        mf, fa = m['minifast'][key], m['fastai'][key]
        ratio = f'{mf / fa:.2f}' if fa else '-'
        lines.append(f'| {label} | {mf:{fmt}} | {fa:{fmt}} | {ratio} | {verdict(target, mf, fa)} |')
    return '\n'.join(lines)


def machine() -> str:
    cpu, mem = platform.processor(), 0
    if Path('/proc/cpuinfo').exists():
        cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                    if l.startswith('model name')), '?')
    if Path('/proc/meminfo').exists():
        mem = next((int(l.split()[1]) / 2**20 for l in Path('/proc/meminfo').read_text().splitlines()
                    if l.startswith('MemTotal')), 0)
    return (f'{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, {mem:.0f} GiB RAM, '
            f'Python {platform.python_version()}')

def git_state() -> str:
    "minifast's commit, and whether the working tree differs (the children import the tree as it is when they start)."
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--', 'minifast'], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return f"{head}{' with uncommitted changes in minifast/' if dirty else ''}"
    except OSError: return 'unknown (no git)'

def uptime() -> str:
    try: return subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    except OSError: return 'load average: %.2f, %.2f, %.2f' % os.getloadavg()


def _sizes(detail):
    return ', '.join(f'{n} {mb:.1f}' for n, mb in sorted(detail['package_mb'].items(), key=lambda kv: -kv[1]))

def _valleys_line(m):
    return '- lr_find suggestion per seed: ' + '; '.join(
        f"{lib} " + ', '.join(f'{s}: {v:.2e}' for s, v in m[lib]['valleys'].items()) for lib in LIBS)

def _shown_python() -> str:
    try: return str(Path(sys.executable).relative_to(ROOT))
    except ValueError: return Path(sys.executable).name

def write_results(path, c, m, ceiling, args, started, loads, versions, elapsed, commits):
    if 'size_detail' in m['minifast']:
        sd = {lib: m[lib]['size_detail'] for lib in LIBS}
        size_notes = f"""Installed size counts the files in each distribution's RECORD (for minifast, installed
editable, its source package folder), for the requirement closure of the library minus the closure of torch and
torchvision; subtracted ({len(sd['fastai']['subtracted'])} distributions): {', '.join(sd['fastai']['subtracted'])}.
- minifast brings ({sd['minifast']['packages']}, MB): {_sizes(sd['minifast'])}
- fastai brings ({sd['fastai']['packages']}, MB): {_sizes(sd['fastai'])}"""
    else:
        size_notes = ('Installed sizes: not measured in this run '
                      '(--fastai-python: both libraries share one environment).')
    loaded = (' (a loaded machine: other jobs shared the cores, absolute numbers are disturbed; the alternation keeps '
              'the ratios fairer)') if max(loads[2]) > 0.5 * (os.cpu_count() or 1) else ''
    fp16 = ', to_fp16' if c['fp16'] else ''
    errors = {lib: ', '.join(f'{e:.3f}' for e in m[lib]['error_rates']) for lib in LIBS}
    text = f"""# minifast against fastai {FASTAI_VERSION}

Written by `benchmarks/bench_vs_fastai.py` (see benchmarks/README.md for what each row measures).

- Date: {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.0f} min in all
- Machine: {machine()}; device {c['device']}; torch threads {c['threads']} in every process
- Versions: {versions}
- minifast commit at the start: {commits[0]}; at the end: {commits[1]}
- Command: `{' '.join([_shown_python(), 'benchmarks/bench_vs_fastai.py'] + sys.argv[1:])}`
- Load (`uptime`) before: `{loads[0]}`; after: `{loads[1]}`; 1-minute load at the start of the children:
  min {min(loads[2]):.2f}, median {statistics.median(loads[2]):.2f}, max {max(loads[2]):.2f}{loaded}
- Work: built-in data set, {37 * c['n_per_breed']} images (`toy_pets(n_per_breed={c['n_per_breed']})`), {c['arch']},
  pretrained=False, item `Resize({c['presize']})`, `aug_transforms(size={c['size']}, min_scale=0.75)`, bs {c['bs']},
  {c['train_workers']} workers for training{fp16}; error rate at {c['err_size']} px from `Resize({c['err_presize']})`,
  seeds {c['err_seeds']}: minifast {errors['minifast']}; fastai {errors['fastai']}
- Ceiling (same network on random tensors already on the device): {ceiling[0]:.1f} img/s with glibc's default allocator
  settings (the share row divides by this); {ceiling[1]:.1f} img/s with freed large blocks kept for reuse, as
  `import minifast` sets
{_valleys_line(m) if 'valleys' in m['minifast'] else ''}
{'- **--quick run: fewer images, epochs and seeds; for checking the harness only.**' if args.quick else ''}

{table(m, c)}

Ratio is minifast / fastai (below 1 is faster for times, above 1 is faster for images/s).
{size_notes}
"""
    path.write_text(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--threads', type=int,
                   default=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())
    p.add_argument('--quick', action='store_true', help='fewer images, epochs and seeds, to develop the harness')
    p.add_argument('--n-per-breed', type=int); p.add_argument('--err-epochs', type=int)
    p.add_argument('--ft-epochs', type=int)
    p.add_argument('--err-seeds', help='comma-separated, e.g. 0,1,2'); p.add_argument('--import-runs', type=int)
    p.add_argument('--passes', type=int); p.add_argument('--lr-find-it', type=int)
    p.add_argument('--train-workers', type=int)
    p.add_argument('--pass-workers', help='the two worker counts of the dls.train passes, e.g. 0,8')
    p.add_argument('--fastai-python',
                   help='an interpreter that imports fastai 2.8.12 with the same torch (no venv is built)')
    p.add_argument('--valley-seeds',
                   help="lr_find's suggestion over these seeds too, e.g. 0,1,2 (seed 0 is the main lr_find run)")
    p.add_argument('--only', choices=['lr_find', 'fine_tune'],
                   help='measure only this part (the table then has only its rows; fine_tune includes the ceiling)')
    p.add_argument('--results', type=Path, default=ROOT/'benchmarks'/'RESULTS.md', help="'-' to write nothing")
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child: return child(json.loads(args.child))

    c = config(args)
    if c['device'] == 'cuda':
        import torch
        if not torch.cuda.is_available(): p.error('--device cuda: torch sees no CUDA device here.')
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    pythons = {'minifast': Path(sys.executable), 'fastai': ensure_fastai_venv(fa_python=args.fastai_python)}
    from minifast.data.external import minifast_home
    from minifast.data.toy_pets import toy_pets
    c['data'] = str(toy_pets(dest=minifast_home()/'data'/f'bench_toy_pets_{c["n_per_breed"]}',
                             n_per_breed=c['n_per_breed']))
    versions = '; '.join(_version(pythons[lib], f'import {lib}, torch, torchvision; print("{lib}", {lib}.__version__, '
                                  '"with torch", torch.__version__, "torchvision", torchvision.__version__)')
                         for lib in LIBS)
    log_dir = tempfile.mkdtemp(prefix='bench_vs_fastai-')
    print(f'data {c["data"]}; logs {log_dir}; {uptime()}', flush=True)
    run = Runner(pythons, c, log_dir)
    before, commit_before = uptime(), git_state()
    m, ceiling = measure(run, c)
    loads = (before, uptime(), [])
    for f in sorted(Path(log_dir).glob('*.log')):
        line = next((l for l in f.read_text().splitlines() if l.startswith('RESULT ')), None)
        if line: loads[2].append(json.loads(line[7:])['load_at_start'][0])
    print('\n' + table(m, c))
    if 'valleys' in m['minifast']: print(_valleys_line(m))
    if 'ceiling_share' in m['minifast']:
        print(f'ceiling: {ceiling[0]:.1f} img/s (glibc defaults), {ceiling[1]:.1f} (freed blocks kept)')
    if c['only']: print('(--only: nothing written)')
    elif str(args.results) != '-':
        write_results(args.results, c, m, ceiling, args, started, loads, versions, time.perf_counter() - t0,
                      (commit_before, git_state()))
        print(f'\nwritten to {args.results}')


if __name__ == '__main__':
    main()
