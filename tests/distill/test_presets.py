"""Every preset runs and routes as documented; what each needs; the pruning probe; config mapping."""

import pytest
import torch

import distill_reference as ref
from dopd.distill import PRESETS, REGIMES, UNROUTED, DOPDLossConfig, Term, dopd_loss, get_preset
from dopd.hparams import ConfigError, DistillArguments
from test_loss import assert_matches, make_batch, run_reference

BL, BW = 0.6, 0.3
T, S = "teacher", "privileged_student"
# The documented tables, written out here (numeric weights with the default betas).
EXPECTED = {
    "dopd": ref.paper_table(BL, BW),
    "vanilla_opd": ref.uniform((T, "sampled_rkl", 1.0)),
    "vanilla_opd_full_rkl": ref.uniform((T, "rkl", 1.0)),
    "opsd": ref.uniform((S, "js", 1.0)),
    "uniform_teacher": ref.uniform((T, "js", 1.0)),
    "uniform_dual": ref.uniform((T, "js", 0.5), (S, "js", 0.5)),
    "ablate_no_routing": ref.uniform(
        (T, "js", 0.25), (S, "rkl_topk", 0.25 * BL), (T, "rkl_topk", 0.25 * BL), (S, "rkl_topk", 0.25 * BW)),
    "ablate_no_teacher": {"HT": [], "HS": [(S, "rkl_topk", BL)], "LH": [], "LL": [(S, "rkl_topk", BW)]},
    "ablate_no_student": {"HT": [(T, "js", 1.0)], "HS": [], "LH": [(T, "rkl_topk", BL)], "LL": []},
    "ablate_single_divergence": {"HT": [(T, "js", 1.0)], "HS": [(S, "js", BL)], "LH": [(T, "js", BL)],
                                 "LL": [(S, "js", BW)]},
    "ablate_topk_everywhere": {"HT": [(T, "js_topk", 1.0)], "HS": [(S, "rkl_topk", BL)], "LH": [(T, "rkl_topk", BL)],
                               "LL": [(S, "rkl_topk", BW)]},
    "ablate_full_vocab_everywhere": {"HT": [(T, "js", 1.0)], "HS": [(S, "rkl", BL)], "LH": [(T, "rkl", BL)],
                                     "LL": [(S, "rkl", BW)]},
    "dopd_hs_teacher": {"HT": [(T, "js", 1.0)], "HS": [(T, "rkl_topk", BL)], "LH": [(T, "rkl_topk", BL)],
                        "LL": [(S, "rkl_topk", BW)]},
    "dopd_ht_rkl": {"HT": [(T, "rkl", 1.0)], "HS": [(S, "rkl_topk", BL)], "LH": [(T, "rkl_topk", BL)],
                    "LL": [(S, "rkl_topk", BW)]},
}
NEEDS = {  # (needs_teacher, needs_privileged_student)
    "vanilla_opd": (True, False), "vanilla_opd_full_rkl": (True, False), "opsd": (False, True),
    "uniform_teacher": (True, False),
}


def test_every_preset_is_documented_here():
    assert set(PRESETS) == set(EXPECTED)
    assert all(len(p.description) > 40 for p in PRESETS.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_routes_as_documented(name):
    cfg = DOPDLossConfig(preset=name, distill_top_k=4)
    assert (cfg.needs_teacher, cfg.needs_privileged_student) == NEEDS.get(name, (True, True))
    student, priv, teacher, labels = make_batch(seed=11)
    z = student.clone().requires_grad_(True)
    out = dopd_loss(z, priv, teacher, labels, cfg)
    expected = run_reference(student, priv, teacher, labels, EXPECTED[name], cfg)
    assert_matches(out, expected, labels)
    out.loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # zero loss exactly on regimes the table leaves empty
    for i, r in enumerate(REGIMES):
        if not EXPECTED[name][r]:
            assert (out.per_token_loss[out.regimes == i] == 0).all()


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_presets_without_a_target_accept_none(name):
    needs_t, needs_s = NEEDS[name]
    cfg = DOPDLossConfig(preset=name, distill_top_k=4)
    assert (cfg.needs_teacher, cfg.needs_privileged_student) == (needs_t, needs_s)
    assert not cfg.routed
    student, priv, teacher, labels = make_batch(seed=12)
    out = dopd_loss(student, priv if needs_s else None, teacher if needs_t else None, labels, cfg)
    full = dopd_loss(student, priv, teacher, labels, cfg)
    assert torch.allclose(out.per_token_loss, full.per_token_loss)
    valid = labels != -100
    assert (out.regimes[valid] == UNROUTED).all() and (out.regimes[~valid] == -1).all()
    assert (full.regimes[valid] >= 0).all()  # with both given, regimes are still reported (metrics)


def test_routed_presets_need_both():
    for name in ("dopd", "ablate_no_teacher", "ablate_no_student"):
        cfg = DOPDLossConfig(preset=name)
        assert cfg.routed and cfg.needs_teacher and cfg.needs_privileged_student
    assert DOPDLossConfig(preset="vanilla_opd", prune_mode="top").needs_privileged_student  # A needs q_S
    assert not DOPDLossConfig(preset="vanilla_opd", prune_mode="random").needs_privileged_student


def test_unknown_preset_names_close_matches():
    with pytest.raises(ValueError, match="did you mean: opsd"):
        get_preset("opds")


def test_custom_table_and_from_args():
    args = DistillArguments(distill_top_k=4, beta_l=0.5, beta_w=0.2, trim_fraction=0.1, loss_aggregation="token",
                            routing_table="{HT: [[teacher, fkl, 2.0]], HS: [], LH: [], "
                                          "LL: [[privileged_student, rkl, beta_w]]}")
    cfg = DOPDLossConfig.from_args(args, "dopd")
    assert (cfg.distill_top_k, cfg.beta_l, cfg.beta_w, cfg.trim_fraction, cfg.loss_aggregation) == (
        4, 0.5, 0.2, 0.1, "token")
    assert cfg.routing_table["LL"] == (Term(S, "rkl", 1.0, "beta_w"),)
    student, priv, teacher, labels = make_batch(seed=13)
    out = dopd_loss(student, priv, teacher, labels, cfg)
    table = {"HT": [(T, "fkl", 2.0)], "HS": [], "LH": [], "LL": [(S, "rkl", 0.2)]}
    assert_matches(out, run_reference(student, priv, teacher, labels, table, cfg), labels)
    assert DOPDLossConfig.from_args(DistillArguments(), "opsd").preset == "opsd"
    with pytest.raises(ConfigError, match="unknown DOPD preset"):
        DOPDLossConfig.from_args(DistillArguments(), "sft")
    with pytest.raises(ConfigError, match="prune_mode"):
        DOPDLossConfig.from_args(DistillArguments(prune_mode="middle"), "dopd")


@pytest.mark.parametrize("mode", ["top", "bottom"])
def test_pruning_probe_drops_tokens_by_gap(mode):
    student, priv, teacher, labels = make_batch(B=4, T=10, seed=14)
    cfg = DOPDLossConfig(preset="vanilla_opd", prune_mode=mode, prune_fraction=0.25)
    out = dopd_loss(student, priv, teacher, labels, cfg)
    valid = labels != -100
    n = int(valid.sum())  # 34 valid tokens -> round(8.5) = 8 dropped
    lab = labels.clamp_min(0).unsqueeze(-1)
    log_qs = torch.log_softmax(priv.double(), -1).gather(-1, lab).squeeze(-1)
    log_qt = torch.log_softmax(teacher.double(), -1).gather(-1, lab).squeeze(-1)
    gap = (log_qt - log_qs).abs()[valid]
    order = gap.argsort(descending=(mode == "top"))
    n_drop = round(0.25 * n)
    dropped = torch.zeros(n, dtype=torch.bool)
    dropped[order[:n_drop]] = True
    assert (out.loss_mask[valid] == ~dropped).all()
    assert (out.loss_mask[~valid] == False).all()  # noqa: E712
    assert (out.per_token_loss[valid][dropped] == 0).all()
    assert out.metrics["pruned_frac"] == pytest.approx(n_drop / n)
    # the loss is the unpruned objective over the kept tokens only
    keep = out.loss_mask.tolist()
    expected = run_reference(student, priv, teacher, labels, EXPECTED["vanilla_opd"], cfg, keep=keep)
    assert out.loss.item() == pytest.approx(expected[0], rel=1e-5)


def test_random_pruning_is_reproducible():
    student, priv, teacher, labels = make_batch(B=4, T=10, seed=15)
    cfg = DOPDLossConfig(preset="vanilla_opd", prune_mode="random", prune_fraction=0.5)
    masks = [dopd_loss(student, None, teacher, labels, cfg,
                       generator=torch.Generator().manual_seed(seed)).loss_mask for seed in (1, 1, 2)]
    n = int((labels != -100).sum())
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert int(masks[0].sum()) == n - round(0.5 * n)
    # without a generator: seeded from prune_seed and the batch, so a rerun reproduces it
    a = dopd_loss(student, None, teacher, labels, cfg).loss_mask
    b = dopd_loss(student, None, teacher, labels, cfg).loss_mask
    c = dopd_loss(student, None, teacher, labels, cfg.replace(prune_seed=7)).loss_mask
    assert torch.equal(a, b) and not torch.equal(a, c)
