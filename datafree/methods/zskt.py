"""ZSKT (Micaelli & Storkey 2019): the generator maximises KL(t‖s); the student minimises KL
plus attention transfer (β = 250) on matching-resolution activations; 1 generator : 10 student."""
from datafree.methods import Method, register_method

register_method(Method(
    name="zskt",
    summary="generator −KL(t‖s); student KL + 250·AT; 1:10",
    data="synthetic",
    terms={"generator": {"adv_kl": 1.0}, "student": {"kl": 1.0, "at": 250.0}},
    defaults={"trainer.g_steps": 1, "trainer.s_steps": 10, "method.temperature": 1.0},
    reference="polo5/ZeroShotKnowledgeTransfer",
))
