"""``ganlab import dcgan-code``: the authors' Theano parameter files, read safely and converted exactly.

The parameter files here are small and synthetic, written in the authors' layout: a protocol-2 pickle of
old joblib's ``NDArrayWrapper`` records naming companion ``.npy`` files (what their ``models/`` folders hold),
modern ``joblib.dump`` files, plain pickles and ``.npz``. The reference forward pass is Theano's, re-implemented
with scipy's true 2-D convolution.
"""
import os
import pickle

import numpy as np
import pytest
import scipy.signal
import torch
from click.testing import CliRunner

import ganlab
from ganlab.cli import GanlabGroup
from ganlab_plugins import dcgan_code, dcgan_code_format

# (kernel, stride per conv, widths, image size): an SVHN-like and an ImageNet-32-like D, small
SVHN_LIKE = (5, [2, 2], [4, 8], 16)
IMAGENET_LIKE = (3, [1, 2, 1, 2], [2, 2, 4, 4], 16)


def _params(layout, channels=3, seed=0):
    """The authors' discriminator list: w, then (w_i, g_i, b_i) per BatchNorm conv, then wy ((C*16) x 1)."""
    k, _, widths, _ = layout
    rng = np.random.default_rng(seed)
    params, previous = [], channels
    for i, width in enumerate(widths):
        params.append(rng.normal(0, 0.3, (width, previous, k, k)).astype(np.float32))
        if i:
            params += [rng.normal(1, 0.2, width).astype(np.float32), rng.normal(0, 0.2, width).astype(np.float32)]
        previous = width
    params.append(rng.normal(0, 0.3, (previous * 16, 1)).astype(np.float32))
    return params


def _theano_forward(params, layout, x, stats=None, correlate=False, eps=1e-5):
    """Theano's D on float images x (N x C x H x W in [-1, 1]): logits, post-activation maps, BN (mean, var) used.

    Convolutions are true convolutions (dnn_conv, conv_mode='conv'), padding (k - 1) // 2, then subsampled;
    BatchNorm uses ``stats`` (mean, variance) when given, else the batch's; ``used`` holds the batch's mean and
    unbiased variance.
    """
    k, strides, widths, _ = layout
    pad = (k - 1) // 2
    op = scipy.signal.correlate2d if correlate else scipy.signal.convolve2d
    h, maps, used, i, bn = x.astype(np.float64), [], [], 0, 0
    for layer, stride in enumerate(strides):
        w = params[i].astype(np.float64)
        padded = np.pad(h, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out = np.stack([np.stack([sum(op(padded[n, c], w[o, c], mode="valid") for c in range(w.shape[1]))
                                  for o in range(w.shape[0])]) for n in range(len(h))])[:, :, ::stride, ::stride]
        i += 1
        if layer:
            g, b = params[i].astype(np.float64), params[i + 1].astype(np.float64)
            i += 2
            if stats is None:  # train mode, as Theano's batchnorm: the batch's mean and biased variance
                u, s = out.mean((0, 2, 3)), out.var((0, 2, 3))
                n = out.size // out.shape[1]
                used.append((u, s * n / (n - 1)))  # what the running (unbiased) variance should hold
            else:
                u, s = stats[bn]
            bn += 1
            out = (out - u[None, :, None, None]) / np.sqrt(s[None, :, None, None] + eps) * g[None, :, None, None] \
                + b[None, :, None, None]
        h = 0.6 * out + 0.4 * np.abs(out)  # Theano's LeakyRectify(0.2)
        maps.append(h)
    logits = h.reshape(len(h), -1) @ params[-1].astype(np.float64)
    return logits[:, 0], maps, used


def _pool(maps):
    return np.concatenate([m.reshape(m.shape[0], m.shape[1], 4, m.shape[2] // 4, 4, m.shape[3] // 4).max((3, 5))
                           .reshape(len(m), -1) for m in maps], axis=1)


def _images(n, channels=3, size=16, seed=1):
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", [SVHN_LIKE, IMAGENET_LIKE], ids=["svhn-like", "imagenet-like"])
def test_converted_d_matches_theano_forward_with_recomputed_statistics(layout):
    params = _params(layout)
    config, D = dcgan_code.discriminator_from_params(params)
    assert (config.kernel_size, config.ndf, config.image_size) == (layout[0], layout[2][0], layout[3])
    assert config.extra_layers == (1 if layout is IMAGENET_LIKE else 0)
    real = _images(12)
    D = ganlab.recompute_batchnorm(D, real, batch_size=12)
    x = ganlab.to_unit_range(real).numpy()
    # the authors' statistics: one batch of the real images through the train-mode (batch-statistics) net
    _, _, stats = _theano_forward(params, layout, x)
    norms = [m for m in D.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm, (u, s) in zip(norms, stats, strict=True):
        np.testing.assert_allclose(norm.running_mean.numpy(), u, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm.running_var.numpy(), s, rtol=1e-4, atol=1e-5)
    # new images through both, BatchNorm with those statistics
    test = _images(3, seed=7)
    want_logits, want_maps, _ = _theano_forward(params, layout, ganlab.to_unit_range(test).numpy(), stats=stats)
    with torch.no_grad():
        logits = D(ganlab.to_unit_range(test)).numpy()
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)
    features = ganlab.discriminator_features(D, test)
    np.testing.assert_allclose(features, _pool(want_maps), rtol=1e-4, atol=1e-4)
    # the flip matters: cross-correlating with the stored kernels gives other outputs
    wrong, _, _ = _theano_forward(params, layout, ganlab.to_unit_range(test).numpy(), stats=stats, correlate=True)
    assert not np.allclose(logits, wrong, rtol=1e-2, atol=1e-2)


def _old_joblib_bytes(filenames):
    """What sklearn.externals.joblib (< 0.10) wrote: a protocol-2 list of NDArrayWrapper records naming .npy files."""
    def short(text):
        data = text.encode()
        return b"U" + bytes([len(data)]) + data

    body = b"\x80\x02]("
    for name in filenames:
        body += (b"csklearn.externals.joblib.numpy_pickle\nNDArrayWrapper\n)\x81}(" + short("allow_mmap") + b"\x88"
                 + short("subclass") + b"cnumpy\nndarray\n" + short("filename") + short(name) + b"ub")
    return body + b"e."


def _write_old_joblib(folder, params, stem="200_discrim_params.jl"):
    """The pickle and its companions STEM_01.npy, STEM_02.npy, ... as in the authors' models/ folders."""
    names = [f"{stem}_{i:02d}.npy" for i in range(1, len(params) + 1)]
    for name, array in zip(names, params):
        np.save(folder / name, array)
    (folder / stem).write_bytes(_old_joblib_bytes(names))
    return folder / stem


def _cli():
    group = GanlabGroup()
    dcgan_code.ganlab_register_commands(group)
    return group


def _run(*args):
    return CliRunner().invoke(_cli(), ["import", "dcgan-code", *map(str, args)])


def test_reads_the_authors_old_joblib_layout_and_every_other_form(tmp_path):
    params = _params(SVHN_LIKE)
    forms = {}
    old = tmp_path / "old"
    old.mkdir()
    forms["old joblib"] = dcgan_code_format.read_params(_write_old_joblib(old, params))
    np.savez(tmp_path / "5_discrim_params.npz", *params)
    forms["npz"] = dcgan_code_format.read_params(tmp_path / "5_discrim_params.npz")
    for protocol in (2, 4, 5):
        with open(tmp_path / f"plain{protocol}.pkl", "wb") as f:
            pickle.dump(params, f, protocol=protocol)
        forms[f"pickle {protocol}"] = dcgan_code_format.read_params(tmp_path / f"plain{protocol}.pkl")
    joblib = pytest.importorskip("joblib", reason="joblib writes the modern format")
    joblib.dump(params, tmp_path / "new.jl")
    forms["joblib"] = dcgan_code_format.read_params(tmp_path / "new.jl")
    joblib.dump(params, tmp_path / "zlib.jl", compress=3)
    forms["joblib zlib"] = dcgan_code_format.read_params(tmp_path / "zlib.jl")
    joblib.dump([p.T for p in params], tmp_path / "fortran.jl")  # transposes are Fortran-ordered
    np.testing.assert_array_equal(dcgan_code_format.read_params(tmp_path / "fortran.jl")[0], params[0].T)
    for name, arrays in forms.items():
        assert len(arrays) == len(params), name
        for got, want in zip(arrays, params):
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert dcgan_code_format.find_discriminator_file(old) == (old / "200_discrim_params.jl", 200)


class _System:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["system", "system-after-arrays", "escaping-companion", "object-array",
                                  "build-on-a-class"])
def test_hostile_files_are_refused_without_running_anything(tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = tmp_path / "1_discrim_params.jl"
    evil = _System()
    evil.marker = marker
    if kind == "system":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    elif kind == "system-after-arrays":
        path.write_bytes(pickle.dumps([np.zeros(3, np.float32), evil], protocol=4))
    elif kind == "escaping-companion":
        np.save(tmp_path.parent / "outside.npy", np.zeros(2, np.float32))
        path.write_bytes(_old_joblib_bytes(["../outside.npy"]))
    elif kind == "object-array":
        joblib = pytest.importorskip("joblib")
        joblib.dump([np.array([evil], dtype=object)], path)
    else:  # BUILD with (None, {"x": 1}) on the wrapper class itself would setattr on the class
        path.write_bytes(b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\nN}U\x01xK\x01s\x86b.")
    result = _run(tmp_path, "--out", tmp_path.parent / f"{tmp_path.name}-x.pt", "--dataset", "digits")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: refused to read") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output and not marker.exists()
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ganlab.GanlabError, match="refused"):
        dcgan_code_format.read_params(path)
    assert not marker.exists()


def test_command_converts_recomputes_statistics_on_real_images_and_writes_a_weights_only_checkpoint(tmp_path):
    layout = (5, [2, 2], [4, 8], 16)
    params = _params(layout, channels=1)
    folder = tmp_path / "model"
    folder.mkdir()
    _write_old_joblib(folder, params, stem="30_discrim_params.jl")
    _write_old_joblib(folder, _params(layout, channels=1, seed=5), stem="7_discrim_params.jl")
    out = tmp_path / "ckpt.pt"
    result = _run(folder, "--out", out, "--dataset", "digits", "--limit", 100)
    assert result.exit_code == 0, result.output
    assert "30_discrim_params.jl" in result.output and "100 images of digits/train" in result.output
    payload = torch.load(out, weights_only=True)
    assert payload["epoch"] == 30 and payload["dataset"]["name"] == "digits"
    gan = ganlab.load(out)
    assert gan.config.kernel_size == 5 and gan.config.channels == 1 and gan.config.image_size == 16
    # the weights: kernels flipped, dense layer as a 4x4 conv, BN gain and bias as they were
    state = gan.discriminator.state_dict()
    np.testing.assert_array_equal(state["main.0.weight"].numpy(), params[0][:, :, ::-1, ::-1])
    np.testing.assert_array_equal(state["main.2.weight"].numpy(), params[1][:, :, ::-1, ::-1])
    np.testing.assert_array_equal(state["main.3.weight"].numpy(), params[2])
    np.testing.assert_array_equal(state["main.3.bias"].numpy(), params[3])
    np.testing.assert_array_equal(state["main.5.weight"].numpy().reshape(-1), params[4][:, 0])
    # the statistics: those of the same 100 digits, by the Theano reference pass
    real, _ = ganlab.load_split("digits", "train", image_size=16, channels=1, limit=100, progress=False)
    _, _, stats = _theano_forward(params, layout, ganlab.to_unit_range(real).numpy())
    np.testing.assert_allclose(state["main.3.running_mean"].numpy(), stats[0][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["main.3.running_var"].numpy(), stats[0][1], rtol=1e-4, atol=1e-5)
    # an existing checkpoint is kept unless --overwrite; --epoch picks another file
    before = out.read_bytes()
    again = _run(folder, "--out", out, "--dataset", "digits", "--limit", 100, "--epoch", 7)
    assert again.exit_code == 1 and "--overwrite" in again.output and out.read_bytes() == before
    assert _run(folder, "--out", out, "--dataset", "digits", "--limit", 100, "--epoch", 7, "--overwrite").exit_code == 0
    np.testing.assert_array_equal(ganlab.load(out).discriminator.state_dict()["main.0.weight"].numpy(),
                                  _params(layout, channels=1, seed=5)[0][:, :, ::-1, ::-1])


def _broken(tmp_path, kind):
    params = _params(SVHN_LIKE)
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "missing-folder":
        return tmp_path / "nowhere", "does not exist"
    if kind == "no-params":
        (folder / "readme.txt").write_text("nothing here")
        return folder, "no discriminator parameters"
    if kind == "missing-companion":
        _write_old_joblib(folder, params)
        (folder / "200_discrim_params.jl_03.npy").unlink()
        return folder, "needs 200_discrim_params.jl_03.npy beside it"
    if kind == "wrong-gain":
        params[2] = params[2][:5]
        message = "BatchNorm gain of shape (8,), not (5,)"
    elif kind == "wrong-count":
        params = params[:-1]
        message = "holds 4 arrays"
    elif kind == "wrong-dense":
        params[-1] = params[-1][:100]
        message = "the last array should be the dense layer"
    elif kind == "no-architecture":
        params[0] = params[0][:, :, :4, :4].copy()
        params[1] = params[1][:, :, :4, :4].copy()
        message = "no ganlab discriminator has these layers"
    elif kind == "truncated":
        path = folder / "1_discrim_params.jl"
        path.write_bytes(pickle.dumps(params, protocol=2)[:300])
        return folder, "is not a readable joblib file"
    elif kind == "npz-names":
        np.savez(folder / "1_discrim_params.npz", w=params[0])
        return folder, "np.savez(path, *params)"
    else:
        raise AssertionError(kind)
    np.savez(folder / "1_discrim_params.npz", *params)
    return folder, message


@pytest.mark.parametrize("kind", ["missing-folder", "no-params", "missing-companion", "wrong-gain", "wrong-count",
                                  "wrong-dense", "no-architecture", "truncated", "npz-names"])
def test_bad_input_is_a_one_line_error(tmp_path, kind):
    folder, message = _broken(tmp_path, kind)
    result = _run(folder, "--out", tmp_path / "x.pt", "--dataset", "digits", "--limit", 10)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.pt").exists()


def test_missing_dataset_option_and_unknown_dataset(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    np.savez(folder / "1_discrim_params.npz", *_params(SVHN_LIKE))
    missing = _run(folder, "--out", tmp_path / "x.pt")
    assert missing.exit_code == 2 and "--dataset" in missing.output
    unknown = _run(folder, "--out", tmp_path / "x.pt", "--dataset", "no-such-set")
    assert unknown.exit_code == 1 and unknown.output.count("\n") == 1 and "Traceback" not in unknown.output


def test_the_imagenet32_layout_maps_onto_the_preset():
    rng = np.random.default_rng(0)
    widths, params, previous = [128, 128, 256, 256, 512, 512], [], 3
    for i, width in enumerate(widths):
        params.append(rng.normal(0, 0.02, (width, previous, 3, 3)).astype(np.float32))
        if i:
            params += [np.ones(width, np.float32), np.zeros(width, np.float32)]
        previous = width
    params.append(rng.normal(0, 0.02, (512 * 16, 1)).astype(np.float32))
    assert len(params) == 17  # as the authors' 30_discrim_params.jl_01.npy ... _17.npy
    assert dcgan_code.match_config(params) == ganlab.PRESETS["imagenet32"]


def test_the_command_is_registered_through_the_entry_point():
    from ganlab.cli import cli

    assert "dcgan-code" in cli.commands["import"].commands
    result = CliRunner().invoke(cli, ["import", "dcgan-code", "--help"])
    assert result.exit_code == 0 and "--dataset" in result.output
