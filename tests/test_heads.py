"""Temporal heads: every registered head, with tiny real tensors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videoseq.errors import VideoseqError
from videoseq.models.heads import build_head, list_heads

HEADS = list_heads()
TEMPORAL = [h for h in HEADS if h != "per_frame"]
D, C, T = 12, 3, 6


def make(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"hidden": 8, "layers": 2, "dropout": 0.2, **kw}
    return build_head(name, D, C, **kw).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(3, T, D)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    return x, mask


def test_registry_has_the_documented_heads():
    assert set(HEADS) == {"per_frame", "rnn", "lstm", "gru", "conv1d"}


def test_registry_miss_lists_the_choices():
    with pytest.raises(ValueError) as e:
        build_head("transformer", D, C)
    assert isinstance(e.value, VideoseqError)
    msg = str(e.value)
    assert "'transformer'" in msg and all(h in msg for h in HEADS) and "\n" not in msg


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", HEADS)
def test_shapes_and_log_probs(name, bidirectional):
    head = make(name, bidirectional=bidirectional)
    x, mask = padded_batch()
    logits = head(x, mask)
    steps = head.forward_steps(x, mask)
    assert logits.shape == (3, C) and steps.shape == (3, T, C)
    assert torch.isfinite(logits).all() and torch.isfinite(steps).all()
    torch.testing.assert_close(steps.logsumexp(-1), torch.zeros(3, T), atol=1e-5, rtol=0)
    assert head(x).shape == (3, C)   # mask=None: every step valid


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", HEADS)
def test_padded_video_gives_the_same_output_as_the_video_alone(name, bidirectional):
    head = make(name, bidirectional=bidirectional)
    x, mask = padded_batch()
    x[1, 3:] = 100.0            # garbage on padded steps must not leak into the valid ones
    logits = head(x, mask)
    steps = head.forward_steps(x, mask)
    for i, length in enumerate(mask.sum(1).tolist()):
        alone = x[i:i + 1, :length]
        torch.testing.assert_close(logits[i:i + 1], head(alone), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(steps[i:i + 1, :length], head.forward_steps(alone), atol=1e-5, rtol=1e-4)
        # padded steps repeat the last valid belief
        torch.testing.assert_close(steps[i, length:], steps[i, length - 1].expand(T - length, C))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", TEMPORAL)
def test_last_step_belief_is_the_video_prediction(name, bidirectional):
    head = make(name, bidirectional=bidirectional)
    x, mask = padded_batch()
    steps = head.forward_steps(x, mask)
    torch.testing.assert_close(steps[:, -1], F.log_softmax(head(x, mask), -1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", HEADS)
def test_forward_and_steps_is_forward_and_forward_steps_bit_for_bit(name, bidirectional):
    """classify computes both from one pass; the results must not change by a bit."""
    head = make(name, bidirectional=bidirectional, motion_dim=4)
    x, mask = padded_batch()
    with torch.inference_mode():
        logits, steps = head.forward_and_steps(x, mask)
        assert torch.equal(logits, head(x, mask)) and torch.equal(steps, head.forward_steps(x, mask))
        logits, steps = head.forward_and_steps(x)              # mask=None: every step valid
        assert torch.equal(logits, head(x)) and torch.equal(steps, head.forward_steps(x))


@pytest.mark.parametrize("name", HEADS)
def test_forward_steps_are_causal(name):
    head = make(name)
    x, _ = padded_batch()
    later = x.clone()
    later[:, 3:] = torch.randn(3, T - 3, D)
    a, b = head.forward_steps(x), head.forward_steps(later)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_per_frame_steps_are_each_frames_own_prediction():
    head = make("per_frame")
    x, mask = padded_batch()
    steps = head.forward_steps(x, mask)
    for t in range(3):
        torch.testing.assert_close(steps[0, t], F.log_softmax(head(x[:1, t:t + 1]), -1)[0], atol=1e-6, rtol=0)
    # the video prediction is the mean of the valid frames' log-probabilities
    torch.testing.assert_close(head(x, mask)[1], steps[1, :3].mean(0), atol=1e-6, rtol=0)


def test_per_frame_loss_is_frame_level_cross_entropy():
    head = make("per_frame")
    x, mask = padded_batch()
    y = torch.tensor([0, 2, 1])
    steps = head.forward_steps(x, mask)              # each frame's own log-probs
    frame_nll = [-steps[i, t, y[i]] for i in range(3) for t in range(int(mask[i].sum()))]
    torch.testing.assert_close(head.loss(x, mask, y), torch.stack(frame_nll).mean(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", TEMPORAL)
def test_temporal_loss_is_video_level_cross_entropy(name):
    head = make(name)
    x, mask = padded_batch()
    y = torch.tensor([0, 2, 1])
    torch.testing.assert_close(head.loss(x, mask, y), F.cross_entropy(head(x, mask), y))


def test_per_frame_ignores_frame_order_and_temporal_heads_do_not():
    x, _ = padded_batch()
    reversed_x = x.flip(1)
    torch.testing.assert_close(make("per_frame")(x), make("per_frame")(reversed_x), atol=1e-6, rtol=0)
    for name in TEMPORAL:
        head = make(name)
        assert not torch.allclose(head(x), head(reversed_x), atol=1e-4), name


@pytest.mark.parametrize("name", HEADS)
def test_gradients_reach_every_parameter(name):
    head = make(name).train()
    x, mask = padded_batch()
    x.requires_grad_(True)
    head.loss(x, mask, torch.tensor([0, 1, 2])).backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert x.grad[1, 3:].abs().sum() == 0           # padded steps get no gradient
    assert x.grad[1, :3].abs().sum() > 0


@pytest.mark.parametrize("bad", [
    [[1, 0, 1, 0, 0, 0]],          # a hole: valid steps must come first
    [[0, 0, 0, 0, 0, 0]],          # an empty video
])
def test_masks_that_are_not_non_empty_prefixes_are_rejected(bad):
    with pytest.raises(ValueError, match="prefix"):
        make("lstm")(torch.randn(1, T, D), torch.tensor(bad, dtype=torch.bool))


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="hidden=0"):
        build_head("gru", D, C, hidden=0)


def _order_task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: the frames one-hot 0..T-1 in order; class 1: the same frames reversed. Every
    video holds the same set of frames, so only the order tells the classes apart."""
    frames = torch.eye(T, D)                                              # (T, D)
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.where(y[:, None, None] == 0, frames, frames.flip(0))       # (n, T, D)
    return x + 0.05 * torch.randn(x.shape, generator=generator), y


@pytest.mark.parametrize("name", HEADS)
def test_only_heads_with_memory_learn_frame_order(name):
    g = torch.Generator().manual_seed(0)
    x, y = _order_task(64, g)
    torch.manual_seed(0)
    head = build_head(name, D, 2, hidden=16, dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    for _ in range(80):
        opt.zero_grad()
        head.loss(x, None, y).backward()
        opt.step()
    x_test, y_test = _order_task(200, g)
    accuracy = (head.eval()(x_test).argmax(1) == y_test).float().mean().item()
    if name == "per_frame":
        assert accuracy < 0.65        # chance: the frames alone carry no label
    else:
        assert accuracy > 0.95


# ----------------------------------------------------------------------------- the motion stream

M = 4   # the last M of D input dimensions are motion


@pytest.mark.parametrize("name", HEADS)
def test_input_normalisation_folds_exactly_with_a_motion_stream(name):
    """A head trained on standardised features, folded, gives the same output on raw features:
    both streams of a temporal head, the appearance part alone for per_frame."""
    from videoseq.data.features import fold_input_normalization

    head = make(name, motion_dim=M)
    assert head.embed.input_linears()[0][0].in_features == D - M
    assert len(head.embed.input_linears()) == (1 if name == "per_frame" else 2)
    torch.manual_seed(2)
    raw = 3 + 5 * torch.randn(2, T, D)
    mean, std = raw.mean(dim=(0, 1)), raw.std(dim=(0, 1))
    with torch.no_grad():
        expected = head((raw - mean) / std)
        fold_input_normalization(head, mean, std)
        torch.testing.assert_close(head(raw), expected, atol=1e-4, rtol=1e-4)


def test_stream_dropout_hides_appearance_from_whole_clips_in_training_only():
    head = build_head("lstm", D, C, hidden=8, dropout=0.0, motion_dim=M, stream_dropout=0.75)
    torch.manual_seed(3)
    x = torch.randn(400, T, D)
    other = x.clone()
    other[..., :D - M] = torch.randn(400, T, D - M)                  # new appearance, same motion
    head.train()
    torch.manual_seed(4)
    a = head.embed(x)
    torch.manual_seed(4)
    b = head.embed(other)
    hidden = (a == b).all(dim=2)                                     # (400, T): appearance had no effect
    assert torch.equal(hidden.all(dim=1), hidden.any(dim=1))          # a clip's steps all or none
    assert 0.68 < hidden.all(dim=1).float().mean().item() < 0.82
    head.eval()
    assert not torch.equal(head.embed(x), head.embed(other))
    with pytest.raises(ValueError, match="stream_dropout"):
        build_head("gru", D, C, motion_dim=M, stream_dropout=1.0)
    with pytest.raises(ValueError, match="motion_dim=12"):
        build_head("gru", D, C, motion_dim=D)


# ----------------------------------------------------------------------------- one projection per stream

DIMS = [2, 1, 3]     # three vector streams of a 6-d motion block: what StreamStack.vector_dims gives


SUMMARIES = [torch.tensor([[0.5], [0.5]]), torch.tensor([[1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])]


@pytest.mark.parametrize("bottleneck,summary,stats", [(0, False, False), (2, False, False), (0, True, False),
                                                      (0, True, True)])
@pytest.mark.parametrize("name", HEADS)
def test_per_stream_projections_have_the_shapes_and_fold_exactly(name, bottleneck, summary, stats):
    """Each vector stream read through its own Linear (after a bottleneck when asked), and with
    summaries their fixed whole-frame poolings through one more (and their running statistics through
    another); per_frame still reads the appearance alone; the input normalisation folds into every
    first Linear (and pooling) exactly."""
    from videoseq.data.features import fold_input_normalization

    d = D + 6
    torch.manual_seed(0)
    head = build_head(name, d, C, hidden=8, dropout=0.2, motion_dim=6, stream_dims=DIMS,
                      stream_bottleneck=bottleneck, modality_dropout=0.5,
                      stream_summaries=SUMMARIES if summary else None, stream_stats=stats).eval()
    linears = head.embed.input_linears()
    if name == "per_frame":
        assert head.embed.streams is None and head.embed.motion is None and head.embed.pools is None
        assert head.embed.stats is None
        assert [(lin.in_features, s) for lin, s in linears] == [(D, slice(0, D))]
    else:
        assert head.embed.motion is None and len(head.embed.streams) == 3
        assert [(lin.in_features, s.start, s.stop) for lin, s in linears[:4]] == \
            [(D, 0, D), (2, D, D + 2), (1, D + 2, D + 3), (3, D + 3, D + 6)]
        assert all(lin.out_features == (bottleneck or 8) for lin, _ in linears[1:4])
        if summary:
            assert [lin.weight.shape for lin, _ in linears[4:]] == [(1, 2), (1, 1), (2, 3)]
            assert head.embed.summary[1].in_features == 4
            assert (head.embed.stats[-1].in_features if stats else None) == (20 if stats else None)
            assert not any(n.startswith("embed.pools") for n, _ in head.named_parameters())   # never trained
        else:
            assert len(linears) == 4 and head.embed.summary is None and head.embed.stats is None
    torch.manual_seed(2)
    raw = 3 + 5 * torch.randn(2, T, d)
    mean, std = raw.mean(dim=(0, 1)), raw.std(dim=(0, 1))
    with torch.no_grad():
        expected = head((raw - mean) / std)
        assert expected.shape == (2, C) and torch.equal(head((raw - mean) / std), expected)   # eval: deterministic
        assert head.forward_steps((raw - mean) / std).shape == (2, T, C)
        fold_input_normalization(head, mean, std)
        torch.testing.assert_close(head(raw), expected, atol=1e-4, rtol=1e-4)


def test_the_statistics_norm_is_fixed_in_evaluation_and_keeps_heads_causal():
    """model.stats_norm: in training each statistic is standardised over the batch's steps (a single
    row, which has no variance, uses the running statistics); in evaluation it is a fixed map, so a
    clip's first t steps give the same beliefs whatever follows them."""
    from videoseq.models.embed import StepNorm

    d = D + 6
    torch.manual_seed(0)
    head = build_head("lstm", d, C, hidden=8, dropout=0.0, motion_dim=6, stream_dims=DIMS,
                      stream_summaries=SUMMARIES, stream_stats=True, stats_norm=True)
    norm = head.embed.stats[0]
    assert isinstance(norm, StepNorm) and norm.norm.num_features == 20
    x = torch.randn(4, T, d)
    head.train()
    head(x)
    assert norm.norm.num_batches_tracked == 1 and norm.norm.running_mean.abs().sum() > 0
    head(x[:1, :1])                                                           # one row: no error, no update
    assert norm.norm.num_batches_tracked == 1
    head.eval()
    with torch.no_grad():
        steps = head.forward_steps(x)
        later = x.clone()
        later[:, 4:] = torch.randn_like(later[:, 4:])
        torch.testing.assert_close(head.forward_steps(later)[:, :4], steps[:, :4])
        torch.testing.assert_close(head(x[:, :4]), head(x, torch.arange(T)[None, :].expand(4, -1) < 4))


@pytest.mark.parametrize("name", ["lstm", "conv1d"])
def test_stats_norm_ignores_padded_steps_in_training(name):
    """A padded clip's padded steps enter neither the batch statistics of the statistics' norm nor its
    running ones: whatever they hold, a training step gives the same outputs and the same running
    mean and variance."""
    torch.manual_seed(0)
    head = build_head(name, D + 6, C, hidden=8, dropout=0.0, motion_dim=6, stream_dims=DIMS,
                      stream_summaries=SUMMARIES, stream_stats=True, stats_norm=True)
    norm = head.embed.stats[0].norm
    x = torch.randn(4, T, D + 6)
    mask = torch.arange(T)[None, :] < torch.tensor([T, T - 2, 3, T])[:, None]      # (4, T)
    other = x.clone()
    other[~mask] = 100.0 * torch.randn_like(other[~mask])                          # padding far off
    head.train()
    runs = []
    for clip in (x, other):
        norm.reset_running_stats()
        out = head(clip, mask)
        runs.append((out, norm.running_mean.clone(), norm.running_var.clone()))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)
    assert runs[0][1].abs().sum() > 0


def test_running_stats_are_causal_and_exact():
    """At step t: mean, mean magnitude, maximum and minimum of steps 1..t of each number and the mean
    absolute change between consecutive steps of 2..t (step 0, where no stream has a previous frame, is
    left out and reads zeros); steps after t never change step t."""
    from videoseq.models.embed import running_stats

    torch.manual_seed(5)
    s = torch.randn(3, T, 4)
    got = running_stats(s)                                                   # (3, T, 20)
    assert got.shape == (3, T, 20) and torch.equal(got[:, 0], torch.zeros(3, 20))
    assert torch.equal(got[:, 1, 16:], torch.zeros(3, 4))                    # one step: no change yet
    for t in range(1, T):
        d = s[:, 1:t + 1]
        unsteady = (d[:, 1:] - d[:, :-1]).abs().mean(1) if t > 1 else torch.zeros(3, 4)
        expected = torch.cat([d.mean(1), d.abs().mean(1), d.amax(1), d.amin(1), unsteady], dim=1)
        torch.testing.assert_close(got[:, t], expected)
        later = s.clone()
        later[:, t + 1:] = torch.randn(3, T - t - 1, 4) * 100
        assert torch.equal(running_stats(later)[:, :t + 1], got[:, :t + 1])
    assert torch.equal(running_stats(s[:, :1]), torch.zeros(3, 1, 20))
    # a single large step (a cut) sets the maximum from then on; the mean only moves by 1/t of it
    cut = torch.zeros(1, T, 1)
    cut[0, 5] = 8.0
    r = running_stats(cut)[0]
    assert torch.equal(r[4:, 2], torch.tensor([0.0] + [8.0] * (T - 5)))
    torch.testing.assert_close(r[-1, 0], torch.tensor(8.0 / (T - 1)))
    # a steady change has no unsteadiness; one that flips sign every step, as much as its size twice
    steady = running_stats(torch.ones(1, T, 1))[0, -1]
    flips = running_stats(torch.tensor([(-1.0) ** i for i in range(T)]).reshape(1, T, 1))[0, -1]
    assert steady[4] == 0 and flips[4] == 2 and flips[1] == steady[1] == 1


def test_per_frame_reads_no_stream_with_per_stream_projections():
    head = build_head("per_frame", D + 6, C, hidden=8, motion_dim=6, stream_dims=DIMS,
                      modality_dropout=0.3).eval()
    x = torch.randn(2, T, D + 6)
    other = x.clone()
    other[..., D:] = torch.randn(2, T, 6)
    assert torch.equal(head(x), head(other))


def test_modality_dropout_hides_whole_streams_from_clips_but_never_all_of_them():
    """In training each stream is hidden from a share p of the clips (all steps of a clip), never all
    three from one clip; in eval mode nothing is hidden and the output is deterministic."""
    head = build_head("lstm", D + 6, C, hidden=8, dropout=0.0, motion_dim=6, stream_dims=DIMS,
                      modality_dropout=0.6)
    torch.manual_seed(3)
    x = torch.randn(2000, T, D + 6)
    embed = head.embed
    seen = []
    for k, dims in enumerate(embed._vector_slices()):
        other = x.clone()
        other[..., dims] = torch.randn(2000, T, dims.stop - dims.start)    # a new stream k, the rest the same
        head.train()
        torch.manual_seed(4)
        a = embed(x)
        torch.manual_seed(4)
        b = embed(other)
        hidden = (a == b).all(dim=2)                                         # (N, T): stream k had no effect
        assert torch.equal(hidden.all(dim=1), hidden.any(dim=1))             # a clip's steps all or none
        seen.append(~hidden.all(dim=1))
    seen = torch.stack(seen, dim=1)                                          # (N, 3): stream k read by clip n
    assert seen.any(dim=1).all()                                             # never all hidden at once
    # P(hidden) = p, less the all-hidden clips (p^3) given back one stream in three: 0.6 - 0.216/3
    assert 0.48 < 1 - seen.float().mean().item() < 0.58
    head.eval()
    assert torch.equal(embed(x), embed(x))
    with pytest.raises(ValueError, match="modality_dropout"):
        build_head("lstm", D + 6, C, motion_dim=6, stream_dims=DIMS, modality_dropout=1.0)
    with pytest.raises(ValueError, match="stream_dims"):
        build_head("lstm", D + 6, C, motion_dim=6, stream_dims=[2, 2])


def test_modality_dropout_with_one_stream_hides_nothing():
    head = build_head("gru", D, C, hidden=8, dropout=0.0, motion_dim=M, modality_dropout=0.9).train()
    x = torch.randn(50, T, D)
    other = x.clone()
    other[..., D - M:] = torch.randn(50, T, M)
    assert not (head.embed(x) == head.embed(other)).all(dim=2).any()


def test_per_stream_head_traces_to_the_eager_numbers():
    """A traced per-stream head (what infer/export.py does) gives the eager head's numbers."""
    torch.manual_seed(0)
    head = build_head("lstm", D + 6, C, hidden=8, motion_dim=6, stream_dims=DIMS, stream_bottleneck=2,
                      modality_dropout=0.3).eval()
    x, y = torch.randn(2, T, D + 6), torch.randn(2, T, D + 6)
    with torch.no_grad():
        traced = torch.jit.trace(head, (x,))
        torch.testing.assert_close(traced(y), head(y))
