#!/usr/bin/env python
"""Fine-tune and evaluate a dense or retention encoder for token classification (answer tagging on SQuAD).

The recipe lives in ``retention_hf.recipes.token_classification``, so that an installed package runs it too
(``retention-hf train --task token-classification``); this script is its command line. ``--help`` lists
the arguments, and the recipe's docstring has example commands.
"""

import sys

from retention_hf.recipes.token_classification import main


if __name__ == "__main__":
    main(sys.argv[1:])
