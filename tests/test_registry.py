import pytest

from datafree.errors import ConfigError
from datafree.registry import Registry


def test_register_get_and_list():
    reg = Registry("widget")

    @reg.register("round")
    def make_round():
        return "round"

    reg.add("square", lambda: "square")
    assert reg.get("round") is make_round
    assert reg.names() == ["round", "square"]
    assert "square" in reg and "oval" not in reg


def test_unknown_name_suggests_closest():
    reg = Registry("widget")
    reg.add("resnet18", object())
    reg.add("resnet34", object())
    with pytest.raises(ConfigError, match=r"unknown widget 'resnet19'; did you mean 'resnet18'\?"):
        reg.get("resnet19")


def test_registering_twice_is_an_error():
    reg = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)


def test_every_registry_is_populated():
    from datafree.data import DATASETS
    from datafree.methods import METHODS
    from datafree.methods.terms import TERMS
    from datafree.models import MODELS
    from discriminators import DISCRIMINATORS
    from discriminators.losses import GAN_LOSSES
    from generators import GENERATORS

    assert {"digits", "mnist", "cifar10", "cifar100", "svhn", "fashion_mnist", "imagefolder", "wine"} <= set(DATASETS)
    assert {"scratch", "kd", "dfad", "zskt", "dafl", "deepinv", "dfq", "ours", "gankd",
            "gankd_datafree"} <= set(METHODS)
    assert {"adv_l1", "adv_kl", "adv_js", "adv_dkl", "l1", "kl", "bn", "oh", "act", "balance", "coverage", "tv", "at",
            "gan", "r1"} <= set(TERMS)
    assert {"digits_cnn", "digits_cnn_half", "mlp", "lenet5", "resnet18", "wrn40_2", "vgg11_bn"} <= set(MODELS)
    assert {"dcgan", "dcgan_conditional", "mlp"} <= set(GENERATORS)
    assert {"logit", "conditional", "feature"} <= set(DISCRIMINATORS)
    assert {"bce", "lsgan", "hinge"} <= set(GAN_LOSSES)


def test_every_method_uses_registered_terms_for_the_right_players():
    from datafree.methods import METHODS
    from datafree.methods.terms import TERMS

    for name in METHODS:
        for player, terms in METHODS.get(name).terms.items():
            for term in terms:
                assert player in TERMS.get(term).players, (name, player, term)
