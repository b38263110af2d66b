"""Training on labelled real data with cross-entropy: teachers, and the student-from-scratch baseline."""
from datafree.methods import Method, register_method

register_method(Method(
    name="scratch",
    summary="cross-entropy on real labelled data (no teacher)",
    data="real",
    terms={"student": {"ce": 1.0}},
))
