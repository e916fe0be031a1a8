#!/usr/bin/env python
"""Fine-tune and evaluate a dense or retention encoder for extractive question answering (SQuAD v1.1).

The recipe lives in ``retention_hf.recipes.question_answering``, so that an installed package runs it too
(``retention-hf train --task question-answering``); this script is its command line. ``--help`` lists
the arguments, and the recipe's docstring has example commands.
"""

import sys

from retention_hf.recipes.question_answering import main


if __name__ == "__main__":
    main(sys.argv[1:])
