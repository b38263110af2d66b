"""Hinton et al. 2015 knowledge distillation on real data: (1−a)·CE + a·T²·KL(t‖s), with the
mdistiller defaults T = 4, a = 0.9. Change a with method.terms.student.{ce,kl}."""
from datafree.methods import Method, register_method

register_method(Method(
    name="kd",
    summary="Hinton KD on real data: 0.1·CE + 0.9·T²·KL, T=4",
    data="real",
    terms={"student": {"ce": 0.1, "kl": 0.9}},
    defaults={"method.temperature": 4.0},
    reference="Hinton, Vinyals & Dean 2015; megvii-research/mdistiller",
))
