"""Getting data in: write projects from arrays, convert text, add annotations, top-K predictions.

Format: ``../shared/DATA_FORMAT.md``. Nothing here needs PyTorch (that is ``gpu_matcher.extract``).
"""

from gpu_matcher.io.conll import annotate
from gpu_matcher.io.predictions import topk_from_logits
from gpu_matcher.io.text import Corpus, convert_text
from gpu_matcher.formats import write_dictionary
from gpu_matcher.io.vocab import Vocabulary
from gpu_matcher.io.writer import ProjectWriter, write_project

__all__ = ["ProjectWriter", "write_project", "topk_from_logits", "convert_text", "annotate", "Corpus",
           "Vocabulary", "write_dictionary"]
