"""datafree: data-free adversarial knowledge distillation in PyTorch.

    import datafree
    teacher = datafree.train_teacher("digits_cnn", "digits")
    result = datafree.distill(teacher.checkpoint, "digits_cnn_half", method="ours")
    print(result.metrics["student_accuracy"])
    datafree.export(result.checkpoint, "exported", "student.pt2")  # a file checked against the model

    # your own model, no data set: say what it takes
    result = datafree.distill(my_teacher, my_student, input_shape=(3, 32, 32), test_data=(x_test, y_test))
"""
from datafree.api import Result, distill, evaluate, resume, train_teacher
from datafree.checkpoint import load_model, save_model
from datafree.config import Config
from datafree.config import load as load_config
from datafree.data import Dataset, Split, load_dataset, register_dataset
from datafree.errors import ConfigError, DatafreeError, Interrupted
from datafree.exporting import export
from datafree.models import create_model
from datafree.spec import InputSpec

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "Dataset", "DatafreeError", "InputSpec", "Interrupted", "Result", "Split",
           "create_model", "distill", "evaluate", "export", "load_config", "load_dataset", "load_model",
           "register_dataset", "resume", "save_model", "train_teacher"]
