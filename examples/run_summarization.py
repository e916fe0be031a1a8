#!/usr/bin/env python
"""Fine-tune and evaluate a dense or retention encoder for extractive summarisation (SumPubMed sentence scoring).

The recipe lives in ``retention_hf.recipes.summarization``, so that an installed package runs it too
(``retention-hf train --task summarization``); this script is its command line. ``--help`` lists
the arguments, and the recipe's docstring has example commands.
"""

import sys

from retention_hf.recipes.summarization import main


if __name__ == "__main__":
    main(sys.argv[1:])
