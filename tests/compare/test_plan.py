"""A comparison plan is refused before anything runs when it cannot mean what it says."""

from pathlib import Path

import pytest

from alos2fm.compare.plan import Arm, build_plan, default_rates, parse_arms, read_plan
from alos2fm.train.config import ConfigError

BASE = {"data": "ds", "arms": {"rf": {"kind": "rf"}, "swin": {"kind": "swin"}}, "budgets": ["k1"]}


def plan(**fields):
    return build_plan(BASE | {"seeds": [0, 1, 2]} | fields)


def test_a_seed_both_scored_and_tuning_is_refused():
    with pytest.raises(ConfigError, match=r"seeds \[1\] are both scored and tuning"):
        plan(tuning_seeds=[1, 7])


def test_a_goal_on_an_unknown_arm_or_budget_is_refused():
    goal = {"name": "pays", "a": "swin", "b": "unet", "budget": "k1", "delta": 0.05}
    with pytest.raises(ConfigError, match=r"pays: unknown arms \['unet'\]"):
        plan(goals=[goal])
    with pytest.raises(ConfigError, match="budget 'k3' is not in budgets"):
        plan(goals=[goal | {"b": "rf", "budget": "k3"}])


def test_a_budget_typo_is_refused_at_load():
    with pytest.raises(ConfigError, match="kk1"):
        plan(budgets=["kk1"])


def test_comparisons_default_to_every_arm_against_the_first_plus_the_goals():
    goal = {"name": "g", "a": "rf", "b": "swin", "budget": "k1"}
    assert plan().pairs() == [("swin", "rf")]
    assert plan(goals=[goal]).pairs() == [("swin", "rf"), ("rf", "swin")]


def test_arms_from_the_command_line_are_named_by_kind_or_encoder_folder():
    arms = parse_arms("rf,unet,swin,swin=runs/sarw/encoder.safetensors,base:probe")
    assert list(arms) == ["rf", "unet", "swin", "swin-sarw", "base"]
    assert arms["swin-sarw"].encoder == [Path("runs/sarw/encoder.safetensors")]
    with pytest.raises(ConfigError, match="two arms named 'swin'"):
        parse_arms("swin,swin")
    with pytest.raises(ConfigError, match="takes no encoder"):
        parse_arms("rf=enc.safetensors")


def test_encoders_go_round_robin_over_seeds():
    arm = Arm(kind="swin", encoder=[Path("a"), Path("b"), Path("c")])
    assert [arm.encoder_for(i).name for i in range(5)] == ["a", "b", "c", "a", "b"]
    assert Arm(kind="swin").encoder_for(3) is None


def test_candidate_rates_bracket_the_presets_own():
    assert default_rates(Arm(kind="swin"), 3e-2) == [0.01, 0.03, 0.09]
    assert default_rates(Arm(kind="unet", rates=[1e-3]), 3e-2) == [1e-3]


def test_a_plan_files_relative_paths_are_relative_to_it(tmp_path):
    (tmp_path / "plans").mkdir()
    path = tmp_path / "plans" / "p.yaml"
    path.write_text(
        "data: ../stores/seed{seed}\nbudgets: [k1]\nseeds: [0]\n"
        "arms: {sarw: {kind: swin, encoder: [../enc/encoder.safetensors]}}\n"
    )
    loaded = read_plan(path, {"seeds": [4]})
    assert loaded.dataset(4) == tmp_path / "plans" / ".." / "stores" / "seed4"
    assert loaded.arms["sarw"].encoder == [
        tmp_path / "plans" / ".." / "enc" / "encoder.safetensors"
    ]
    assert loaded.seeds == [4]


def test_a_network_arm_may_name_its_own_preset_and_a_bad_one_is_refused():
    arms = {"unet": {"kind": "unet"}, "tiny": {"kind": "unet", "preset": "cpu-tiny-seg"}}
    loaded = plan(arms=arms)
    assert loaded.preset_of(loaded.arms["tiny"]) == "cpu-tiny-seg"
    assert loaded.preset_of(loaded.arms["unet"]) == loaded.unet_preset
    with pytest.raises(ConfigError, match="a rf arm has no fine-tuning preset"):
        plan(arms={"rf": {"kind": "rf", "preset": "cpu-tiny-unet"}})
    with pytest.raises(ConfigError, match="preset 'no-such-preset': unknown preset"):
        plan(arms={"unet": {"kind": "unet", "preset": "no-such-preset"}})


def test_an_arms_preset_file_is_found_beside_the_plan_and_shapes_its_runs(tmp_path):
    from alos2fm.compare.run import network_config
    from tests.train.conftest import make_store

    make_store(tmp_path / "store", n_train=4, n_val=2, n_test=2)
    (tmp_path / "merlin.yaml").write_text(
        "stage: finetune\nmodel: {arch: merlin, img_size: 32}\ndecoder: merlin\n"
        "optim: {layer_decay: null}\n"
    )
    (tmp_path / "p.yaml").write_text(
        "data: store\nbudgets: ['100%']\nseeds: [0]\n"
        "arms: {cnn: {kind: unet}, merlin: {kind: unet, preset: merlin.yaml}}\n"
    )
    loaded = read_plan(tmp_path / "p.yaml")
    assert loaded.arms["merlin"].preset == str(tmp_path / "merlin.yaml")
    configs = {
        name: network_config(loaded, arm, tmp_path / "store", "100%", 0, None)
        for name, arm in loaded.arms.items()
    }
    assert configs["merlin"].decoder == "merlin" and configs["cnn"].decoder == "unet"
    # The resolved config is the run's identity: a preset changed under a finished run
    # changes it, and the run is refused as for any other changed setting.
    (tmp_path / "merlin.yaml").write_text(
        (tmp_path / "merlin.yaml").read_text() + "merlin_weights: spotlight\n"
    )
    changed = network_config(loaded, loaded.arms["merlin"], tmp_path / "store", "100%", 0, None)
    assert changed.model_dump() != configs["merlin"].model_dump()
