"""DFQ (Choi et al. 2020): adversarial KL plus BatchNorm statistics, one-hot and class balance
(weights 1, 1, 1, 20 as in zju-vipa/DataFree); student KL; 1 generator : 10 student.

Deviation: `method.temperature` sets both KL terms, and DFQ keeps T = 1 (the adversarial KL's
temperature in the reference code); the zju-vipa recipe distils the student at T = 20."""
from datafree.methods import Method, register_method

register_method(Method(
    name="dfq",
    summary="generator −KL + bn + oh + 20·balance; student KL; 1:10",
    data="synthetic",
    terms={"generator": {"adv_kl": 1.0, "bn": 1.0, "oh": 1.0, "balance": 20.0}, "student": {"kl": 1.0}},
    defaults={"trainer.g_steps": 1, "trainer.s_steps": 10, "method.temperature": 1.0},
    reference="Choi et al. CVPR-W 2020; zju-vipa/DataFree",
))
