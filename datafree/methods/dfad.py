"""DFAD (Fang et al. 2019): the generator maximises the L1 distance between teacher and student
logits, the student minimises it; 5 student steps per generator step."""
from datafree.methods import Method, register_method

register_method(Method(
    name="dfad",
    summary="generator −L1(s, t); student L1(s, t); 1:5",
    data="synthetic",
    terms={"generator": {"adv_l1": 1.0}, "student": {"l1": 1.0}},
    defaults={"trainer.g_steps": 1, "trainer.s_steps": 5},
    reference="VainF/Data-Free-Adversarial-Distillation",
))
