"""datafree: data-free adversarial knowledge distillation in PyTorch.

    import datafree
    teacher = datafree.train_teacher("digits_cnn", "digits")
    result = datafree.distill(teacher.checkpoint, "digits_cnn_half", method="ours")
    print(result.metrics["student_accuracy"])
"""
from datafree.api import Result, distill, evaluate, resume, train_teacher
from datafree.checkpoint import load_model, save_model
from datafree.config import Config, load as load_config
from datafree.data import DataInfo, load_dataset
from datafree.errors import ConfigError, DatafreeError
from datafree.models import create_model

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "DataInfo", "DatafreeError", "Result", "create_model", "distill", "evaluate",
           "load_config", "load_dataset", "load_model", "resume", "save_model", "train_teacher"]
