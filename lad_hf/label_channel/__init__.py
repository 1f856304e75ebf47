"""The LAD teacher's input: the label noising module (paper Eq. 5), and the label channel that makes any
segmentation model a LAD teacher."""

from .noising import LabelNoiser, is_lad_teacher
from .teacher import add_label_channel, build_teacher_inputs


__all__ = ["LabelNoiser", "add_label_channel", "build_teacher_inputs", "is_lad_teacher"]
