#!/usr/bin/env python
"""Fine-tune and evaluate a dense or retention encoder for text classification (SST-2, IMDb or your files).

The recipe lives in ``retention_hf.recipes.classification`` so that ``retention-hf train`` runs the same
code; this script is its command line.

Examples::

    # retention at rho = 0.5 on the SST-2 subset shipped in data/sst2 (all-MiniLM-L6-v2 from PyPI)
    python examples/run_classification.py --output_dir runs/sst2-r50 --retention_ratio 0.5

    # the dense baseline: same model and recipe, retention off
    python examples/run_classification.py --output_dir runs/sst2-dense --retention false

    # IMDb, max length 512
    python examples/run_classification.py --output_dir runs/imdb-r30 --dataset imdb --retention_ratio 0.3 \\
        --max_seq_length 512
"""

import sys

from retention_hf.recipes.classification import main


if __name__ == "__main__":
    main(sys.argv[1:])
