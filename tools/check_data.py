#!/usr/bin/env python
"""List every problem in a dataset (the checks training runs at load, plus a decode of each image).

    python tools/check_data.py data=voc07 data.root=DIR
    python tools/check_data.py data=custom data.train.image_dir=D data.train.ann_file=F ... [show=-1]
"""
import sys

import hydra
from omegaconf import DictConfig

from detectres.apps.check_data import check_splits
from detectres.config import CONFIG_DIR


@hydra.main(config_path=str(CONFIG_DIR), config_name="check_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sys.exit(check_splits(cfg))


if __name__ == "__main__":
    main()
