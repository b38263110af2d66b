"""GAN-KD: L = CE(s, y) + α·KL(t‖s) + β·GAN(s, t) (Gou et al. 2021, §5.1 family 2).

The discriminator learns teacher answers = real, student answers = fake; the student learns to
fool it, with its own optimizer (unlike MEAL-V2, which shares one and so plays no real game).
`gankd` runs on real labelled data. `gankd_datafree` runs on synthetic batches from the generator
path (our default generator recipe) with no labels: CE is off by default (on synthetic batches
`ce` would use the teacher's decision), and the default `logit` discriminator needs no label
(`discriminator.name = "conditional"` conditions it on the teacher's decision).
"""
from datafree.methods import Method, register_method
from datafree.methods.ours import OURS_GENERATOR_TERMS, OURS_SYNTHETIC_DEFAULTS

register_method(Method(
    name="gankd",
    summary="real data: CE + α·KL + β·GAN, discriminator on student vs teacher outputs",
    data="real",
    terms={"student": {"ce": 1.0, "kl": 1.0, "gan": 0.1}, "discriminator": {"gan": 1.0}},
    defaults={"trainer.d_steps": 1, "method.temperature": 4.0},
    reference="Wang et al. AAAI 2018; Xu, Hsu & Huang 2018",
))

register_method(Method(
    name="gankd_datafree",
    summary="no data: our generator recipe + student KL + β·GAN against a discriminator",
    data="synthetic",
    terms={"generator": dict(OURS_GENERATOR_TERMS), "student": {"kl": 1.0, "gan": 0.1}, "discriminator": {"gan": 1.0}},
    defaults={**OURS_SYNTHETIC_DEFAULTS, "trainer.d_steps": 1},
))
