"""MSRN through every layer: authors' checkpoint format, upstream download, conversion, Restorer."""

import dataclasses
import hashlib
import io

import numpy as np
import torch

from restorekit import registry
from restorekit.archs.msrn import DIV2K_MEAN, MSRN
from restorekit.registry import UrlSource, get_record
from restorekit.restorer import Restorer
from restorekit.weights import git_blob_sha1_file, read_weights, resolve


def test_authors_key_names_and_counts():
    keys = list(MSRN(scale=4).state_dict())
    assert len(keys) == 96 and len(MSRN(scale=2).state_dict()) == 94 and len(MSRN(scale=8).state_dict()) == 98
    for k in (
        "sub_mean.weight",
        "add_mean.bias",
        "head.0.weight",
        "body.7.conv_5_2.bias",
        "body.0.confusion.weight",
        "tail.0.weight",
        "tail.1.bias",
        "tail.2.0.weight",
        "tail.2.2.weight",
        "tail.3.bias",
    ):
        assert k in keys
    assert MSRN(scale=3).tail[2][0].out_channels == 9 * 64


def test_mean_shift_and_head_last_concat():
    net = MSRN(scale=2)
    assert torch.allclose(net.sub_mean.bias, -255 * torch.tensor(DIV2K_MEAN))
    assert torch.allclose(net.add_mean.bias, 255 * torch.tensor(DIV2K_MEAN))
    assert not any(p.requires_grad for p in net.sub_mean.parameters())
    # The authors concatenate [block 1 .. block 8, head]: the head's output is the LAST 64 channels.
    seen = {}

    def keep(name, take_input=False):
        def hook(module, inputs, output):
            seen[name] = inputs[0] if take_input else output  # returns None: the output is left as it is

        return hook

    net.head.register_forward_hook(keep("head"))
    net.body[0].register_forward_hook(keep("block1"))
    net.tail[0].register_forward_hook(keep("concat", take_input=True))
    with torch.inference_mode():
        net(torch.rand(1, 3, 8, 8) * 255)
    assert seen["concat"].shape[1] == 9 * 64
    assert torch.equal(seen["concat"][:, -64:], seen["head"])
    assert torch.equal(seen["concat"][:, :64], seen["block1"])


def test_authors_checkpoint_downloaded_verified_converted_and_run(file_server):
    # An authors'-format file (a bare state dict, as MSRN/Test/model/MSRN_x2.pt) served upstream.
    torch.manual_seed(0)
    cfg = {"scale": 2, "n_feats": 8, "n_blocks": 2, "n_colors": 3, "rgb_range": 255.0}
    net = MSRN(**cfg)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    raw = file_server.add("MSRN/Test/model/MSRN_x2.pt", buf.getvalue())
    blob = _blob_sha1(buf.getvalue())
    base = get_record("msrn.sr_x2")
    rec = dataclasses.replace(
        base,
        tag="sr_x2_local",
        default=False,
        config=cfg,
        params=None,
        hub=None,
        upstream=UrlSource(url=raw, format="torch", git_blob_sha1=blob),
    )
    with registry.temporary(None, rec):
        r = Restorer(rec.name, device="cpu")
        img = np.random.default_rng(0).integers(0, 256, (20, 22, 3), dtype=np.uint8)
        out = r.run(img)
        assert out.shape == (40, 44, 3)
        # The authors' network on the image with the Restorer's 16 px of mirrored surroundings, cropped back.
        x = torch.nn.functional.pad(torch.from_numpy(img).permute(2, 0, 1)[None].float(), (16,) * 4, mode="reflect")
        with torch.inference_mode():
            ref = net.eval()(x)[0, :, 32:-32, 32:-32] / 255
        ref8 = (ref.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        assert np.abs(out.astype(int) - ref8.astype(int)).max() <= 1
        path = resolve(rec)
        sd, header = read_weights(path)
        assert header["arch"] == "msrn" and header["config"]["n_feats"] == 8 and set(sd) == set(net.state_dict())
        n = len(file_server.requests)
        Restorer(rec.name, device="cpu")
        assert len(file_server.requests) == n, "converted once; later loads make no request"
    assert git_blob_sha1_file(path) != blob, "what is cached is our safetensors, not the pickle"


def _blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
