"""Flow estimators (DIS accuracy on known motion, RAFT plumbing) and weight-free flow completion."""
import pytest
import torch

from fffvdi.errors import ConfigError, InputError, ModelLoadError
from fffvdi.flow.completion import SmoothCompleter, build_flow_completer, flow_holes
from fffvdi.flow.estimators import DISFlow, RAFTFlow, build_flow_estimator
from synthetic_video import const_flow, translating_video


@pytest.mark.parametrize("shift,bound", [((3.0, -2.0), 0.1), ((1.5, 0.5), 0.15)])
def test_dis_flow_recovers_known_translation(shift, bound):
    video = translating_video(shift, n_frames=4)
    fw, bw = DISFlow("medium")(video)
    assert fw.shape == bw.shape == (1, 3, 2, 64, 96) and fw.dtype == torch.float32
    true = const_flow(shift, 3, 64, 96)
    inner = (..., slice(8, -8), slice(8, -8))  # skip the border band where content enters the view
    epe_fw = (fw - true).norm(dim=2)[inner].mean().item()
    epe_bw = (bw + true).norm(dim=2)[inner].mean().item()
    # measured: ~0.02 px (integer) and ~0.02-0.03 px (sub-pixel)
    assert epe_fw < bound and epe_bw < bound, (epe_fw, epe_bw)


def test_estimators_reject_bad_input_and_names():
    with pytest.raises(InputError):
        DISFlow()(torch.rand(1, 1, 3, 16, 16))  # one frame: no pairs
    with pytest.raises(ConfigError):
        build_flow_estimator("flownet")
    with pytest.raises(ConfigError):
        DISFlow("slow")


def test_raft_small_random_weights_shapes_padding_and_local_weights(tmp_path):
    raft = build_flow_estimator("raft_small", random_init=True, iters=1, pair_batch=1)
    video = torch.rand(1, 3, 3, 60, 90)  # not divisible by 8 and below RAFT's 128 px minimum
    fw, bw = raft(video)
    assert fw.shape == bw.shape == (1, 2, 2, 60, 90) and fw.dtype == torch.float32
    assert torch.isfinite(fw).all() and torch.isfinite(bw).all()
    path = tmp_path / "raft_small.pth"
    torch.save(raft.model.state_dict(), path)
    again = RAFTFlow("small", weights_path=str(path))
    for name, value in raft.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name


def test_raft_large_random_weights_builds():
    fw, bw = RAFTFlow("large", weights_path="none", iters=1)(torch.rand(1, 2, 3, 32, 40))
    assert fw.shape == bw.shape == (1, 1, 2, 32, 40)


def test_raft_offline_and_missing_file_raise_model_load_error(monkeypatch, tmp_path):
    from torchvision.models._api import WeightsEnum

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ModelLoadError, match="flow.raft_weights"):
        RAFTFlow("small")
    with pytest.raises(ModelLoadError, match="flow.raft_weights"):
        RAFTFlow("small", weights_path=str(tmp_path / "missing.pth"))


def linear_flow(h=64, w=96):
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return torch.stack([0.05 * xs - 0.03 * ys + 1.0, 0.02 * xs + 0.04 * ys - 2.0])[None, None]  # [1, 1, 2, H, W]


def test_smooth_completion_recovers_linear_field_and_keeps_the_rest():
    flow = linear_flow()
    hole = torch.zeros(1, 1, 1, 64, 96, dtype=torch.bool)
    hole[..., 10:50, 20:70] = True
    corrupted = torch.where(hole, torch.full_like(flow, 50.0), flow)
    out = SmoothCompleter().fill(corrupted, hole)
    err = (out - flow).norm(dim=2)[hole[:, :, 0]]
    assert err.max() < 0.01, err.max()  # harmonic fill is exact for linear fields; measured ~1e-4
    assert torch.equal(out[~hole.expand_as(out)], flow[~hole.expand_as(flow)])


def test_cv2_completion_fills_close_to_truth():
    flow = linear_flow()
    hole = torch.zeros(1, 1, 1, 64, 96, dtype=torch.bool)
    hole[..., 25:35, 40:50] = True
    corrupted = torch.where(hole, torch.zeros_like(flow), flow)
    out = build_flow_completer("cv2_inpaint").fill(corrupted, hole)
    err = (out - flow).norm(dim=2)[hole[:, :, 0]]
    assert err.mean() < 0.2, err.mean()  # Navier-Stokes; measured ~0.05 px
    assert torch.equal(out[~hole.expand_as(out)], flow[~hole.expand_as(flow)])
    telea = build_flow_completer("telea").fill(corrupted, hole)  # coarse but within the field's range
    inside = telea[hole.expand_as(telea)].view(2, -1)
    assert (inside.min(1).values >= flow.amin((0, 1, 3, 4)) - 1e-3).all()
    assert (inside.max(1).values <= flow.amax((0, 1, 3, 4)) + 1e-3).all()


def test_complete_flows_uses_source_frame_masks_with_dilation():
    masks = torch.zeros(1, 3, 1, 20, 20)
    masks[:, 0, :, 5, 5] = 1
    masks[:, 2, :, 15, 15] = 1
    fw_holes = flow_holes(masks, backward=False, dilation=1)
    bw_holes = flow_holes(masks, backward=True, dilation=0)
    assert fw_holes.shape == (1, 2, 1, 20, 20)
    assert fw_holes[0, 0, 0, 4:7, 4:7].all() and fw_holes[0, 0].sum() == 9 and not fw_holes[0, 1].any()
    assert bw_holes[0, 1, 0, 15, 15] and bw_holes[0, 1].sum() == 1 and not bw_holes[0, 0].any()
    flows = const_flow((2.0, 1.0), 2, 20, 20)
    flows[:, 0, :, 3:8, 3:8] = 99.0  # garbage inside (dilated) frame-0 hole
    comp = build_flow_completer("smooth", dilation=2)
    out = comp.complete_flows(flows, masks)
    assert torch.allclose(out, const_flow((2.0, 1.0), 2, 20, 20), atol=1e-4)
    with pytest.raises(ConfigError):
        build_flow_completer("learned")


def test_edge_aware_completion_follows_guide_edges_and_is_exact_on_linear_fields():
    h, w = 40, 60
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    holes = torch.zeros(1, 1, 1, h, w, dtype=torch.bool)
    holes[..., 10:30, 15:45] = True
    linear = torch.stack([0.05 * xs + 1, -0.03 * ys])[None, None]
    completer = build_flow_completer("edge_aware")
    assert torch.allclose(completer.fill(linear, holes), linear, atol=1e-4)
    # Two motions meeting at x = 30, where the guide frame has an edge: the guided fill keeps them apart.
    flow = torch.zeros(1, 1, 2, h, w)
    flow[..., 0, :, :30], flow[..., 0, :, 30:] = 1.0, 5.0
    guide = torch.zeros(1, 1, 3, h, w)
    guide[..., 30:] = 1.0
    guided = completer.fill(flow, holes, guide)
    plain = build_flow_completer("smooth").fill(flow, holes)
    err_guided = (guided - flow)[holes.expand_as(flow)].abs().mean()
    err_plain = (plain - flow)[holes.expand_as(flow)].abs().mean()
    assert err_guided < 0.1 < err_plain, (err_guided, err_plain)
    assert torch.equal(guided[~holes.expand_as(flow)], flow[~holes.expand_as(flow)])
