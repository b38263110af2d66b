import pytest

from datafree.config import Config, load, parse_overrides, to_toml
from datafree.errors import ConfigError


def test_defaults_validate_and_follow_the_method_recipe():
    cfg = load()
    assert isinstance(cfg, Config)
    assert cfg.method.name == "ours" and cfg.data.name == "digits"
    assert cfg.trainer.s_steps == 5  # from the 'ours' recipe, not the dataclass default
    dfad = load(overrides={"method.name": "dfad"})
    assert (dfad.trainer.g_steps, dfad.trainer.s_steps) == (1, 5)
    zskt = load(overrides={"method.name": "zskt"})
    assert zskt.trainer.s_steps == 10


def test_file_and_overrides_win_over_the_recipe(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[method]\nname = "dfq"\n[trainer]\ns_steps = 3\nsteps = 40\n[student.optim]\nlr = 0.2\n')
    cfg = load(path, ["trainer.steps=7", "student.name=mlp", "generator.optim.betas=[0.5, 0.9]"])
    assert cfg.method.name == "dfq" and cfg.trainer.s_steps == 3 and cfg.trainer.steps == 7
    assert cfg.student.name == "mlp" and cfg.student.optim.lr == 0.2
    assert cfg.generator.optim.betas == [0.5, 0.9]


def test_overrides_parse_toml_values_and_plain_strings():
    assert parse_overrides(["a.b=3", "a.c=0.5", "a.d=true", "a.e=resnet18", "a.f=[1, 2]", 'a.g="x y"']) == {
        "a.b": 3, "a.c": 0.5, "a.d": True, "a.e": "resnet18", "a.f": [1, 2], "a.g": "x y"}


@pytest.mark.parametrize("override, message", [
    ({"trainer.stepz": 5}, r"unknown config key 'trainer.stepz'; did you mean 'trainer.steps'\?"),
    ({"trainr.steps": 5}, r"unknown config key 'trainr'; did you mean 'trainer'\?"),
    ({"trainer.steps": 0}, r"config key 'trainer.steps' must be > 0 \(got 0\)"),
    ({"trainer.steps": -3}, r"'trainer.steps' must be > 0"),
    ({"student.optim.lr": 0.0}, r"config key 'student.optim.lr' must be > 0"),
    ({"generator.optim.lr": -1e-3}, r"'generator.optim.lr' must be > 0"),
    ({"trainer.steps": "many"}, r"config key 'trainer.steps' must be an integer \(got 'many'\)"),
    ({"trainer.steps": 2.5}, r"'trainer.steps' must be an integer"),
    ({"student.optim.lr": "fast"}, r"'student.optim.lr' must be a number"),
    ({"data.download": "yes"}, r"'data.download' must be true or false"),
    ({"trainer.precision": "fp8"}, r"'trainer.precision' must be one of 'fp32', 'bf16', 'fp16'"),
    ({"generator.replay_fraction": 1.5}, r"'generator.replay_fraction' must be within \[0, 1\]"),
    ({"generator.reset_every": -1}, r"'generator.reset_every' must be >= 0"),
    ({"student.optim.betas": [0.9]}, r"'student.optim.betas' must be two numbers"),
    ({"trainer": 3}, r"config key 'trainer' must be a table"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load(overrides=override)


def test_own_input_keys_beside_a_registered_data_set_are_refused_once_its_name_is_known():
    """Beside the default name they wait for the teacher checkpoint, which may record your own inputs."""
    from datafree.inputs import load_inputs

    with pytest.raises(ConfigError, match=r"'data.test_data' describes your own inputs; the registered data set "
                                          r"'digits' has its own"):
        load(overrides={"data.name": "digits", "data.test_data": "x.npz"})
    cfg = load(overrides={"data.test_data": "x.npz"})
    with pytest.raises(ConfigError, match=r"'data.test_data' describes your own inputs; the registered data set"):
        load_inputs(cfg, None)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load(overrides=["trainer.steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer\nsteps = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(bad)


def test_unknown_method_and_term_names_are_clear():
    from datafree.methods import METHODS

    with pytest.raises(ConfigError, match=r"config key 'method.name': unknown method 'dfadd'; did you mean 'dfad'\?"):
        load(overrides={"method.name": "dfadd"})
    with pytest.raises(ConfigError,
                       match=r"config key 'student.name': unknown model 'resnet19'; did you mean 'resnet18'\?"):
        load(overrides={"student.name": "resnet19"})
    with pytest.raises(ConfigError, match=r"'data.name': unknown data set 'cifar'"):
        load(overrides={"data.name": "cifar"})
    with pytest.raises(ConfigError, match=r"'discriminator.loss': unknown GAN loss 'wgan'"):
        load(overrides={"discriminator.loss": "wgan"})
    with pytest.raises(ConfigError, match=r"'method.terms.generator.bnn'"):
        load(overrides={"method.terms.generator.bnn": 1.0})
    method = METHODS.get("dfad")
    with pytest.raises(ConfigError, match=r"'method.terms.generator.bnn'.*did you mean 'bn'"):
        method.weights({"generator": {"bnn": 1.0}})
    with pytest.raises(ConfigError, match="term 'bn' is for generator, not student"):
        method.weights({"student": {"bn": 1.0}})
    assert method.weights({"generator": {"bn": 2.0}, "student": {"l1": 0}})["student"] == {}


def test_written_config_loads_back_identically(tmp_path):
    cfg = load(overrides={"method.name": "zskt", "student.args": {"width": 8}, "generator.augment": ["shift", "flip"]})
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load(path) == cfg


@pytest.mark.parametrize("override, message", [
    ({"generator.replay_size": 64, "generator.replay_fraction": 1.0},
     r"'generator.replay_fraction' must be < 1 when the replay pool is on"),
    ({"generator.replay_size": 10, "generator.replay_fraction": 0.5, "trainer.batch_size": 64},
     r"'generator.replay_size' must be 0 or at least 32 "),
    ({"student.optim.nesterov": True, "student.optim.momentum": 0.0}, r"'student.optim.nesterov' needs momentum"),
])
def test_replay_and_nesterov_settings_that_would_break_the_run_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load(overrides=override)


def test_a_run_that_would_end_within_the_warm_up_is_refused():
    # fast's 20 warm-up steps only synthesise: 4 steps used to save an untrained student
    with pytest.raises(ConfigError, match=r"^config key 'trainer.steps' is 4, within the 20 warm-up steps"):
        load(overrides={"method.name": "fast", "trainer.steps": 4})
    load(overrides={"method.name": "fast", "trainer.steps": 21})
    load(overrides={"method.name": "fast", "trainer.steps": 4, "method.warmup": 3})


def test_replay_and_nesterov_settings_at_the_edge_are_accepted():
    load(overrides={"generator.replay_size": 32, "generator.replay_fraction": 0.5, "trainer.batch_size": 64})
    load(overrides={"generator.replay_size": 0, "generator.replay_fraction": 1.0})  # pool off: fraction unused
    load(overrides={"student.optim.nesterov": True, "student.optim.momentum": 0.9})
    load(overrides={"generator.optim.name": "adam", "generator.optim.nesterov": True,
                    "generator.optim.momentum": 0.0})  # adam: nesterov unused


def test_one_key_of_a_section_keeps_the_sections_own_defaults():
    # The generator's optimizer is Adam; changing its learning rate alone must not rebuild it from
    # OptimConfig's class defaults (SGD with weight decay).
    cfg = load(overrides=["generator.optim.lr=1e-4", "discriminator.optim.schedule=constant"])
    assert (cfg.generator.optim.name, cfg.generator.optim.lr, cfg.generator.optim.betas) == ("adam", 1e-4, [0.5, 0.999])
    assert ((cfg.discriminator.optim.name, cfg.discriminator.optim.lr, cfg.discriminator.optim.schedule)
            == ("adam", 2e-4, "constant"))
