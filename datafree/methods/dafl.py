"""DAFL (Chen et al. 2019): the generator is trained on the teacher alone — confident (one-hot),
strongly activating, class-balanced samples (MNIST weights 1, 0.1, 5) — and the student learns
KL(t‖s) on them. No adversarial term. DAFL's entropy term uses log10, ours the natural log, so
its weight 5 is 5 / ln 10 here."""
import math

from datafree.methods import Method, register_method

register_method(Method(
    name="dafl",
    summary="generator oh + 0.1·act + 5·balance in log10 (teacher only); student KL",
    data="synthetic",
    terms={"generator": {"oh": 1.0, "act": 0.1, "balance": 5.0 / math.log(10)}, "student": {"kl": 1.0}},
    defaults={"trainer.g_steps": 1, "trainer.s_steps": 1, "method.temperature": 1.0},
    reference="huawei-noah/Data-Efficient-Model-Compression (DAFL)",
))
