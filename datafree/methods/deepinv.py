"""DeepInversion (Yin et al. 2020) with a generator, as in zju-vipa/DataFree: the teacher's
BatchNorm statistics (weight 10), one-hot confidence, a total-variation image prior and the
Jensen–Shannon "adaptive competition" term; student KL at T = 20.

Deviations: the JS term is taken at T = 1 (the reference: T = 3); `tv` is the mean squared
neighbour difference, where DeepInversion sums norms, so at weight 1e-3 it hardly acts (the
digits results are, in effect, without a smoothness prior)."""
from datafree.methods import Method, register_method

register_method(Method(
    name="deepinv",
    summary="generator −JS + 10·bn + oh + tv; student KL(T=20)",
    data="synthetic",
    terms={"generator": {"adv_js": 1.0, "bn": 10.0, "oh": 1.0, "tv": 1e-3}, "student": {"kl": 1.0}},
    defaults={"trainer.g_steps": 1, "trainer.s_steps": 5, "method.temperature": 20.0},
    reference="NVlabs/DeepInversion; zju-vipa/DataFree",
))
