#!/usr/bin/env python
"""Print the paper's ablation table (rows baseline, +refinement, +context, +multi-scale, +all; columns
AP, AP50, AP75, s/image) for a model and its context-trained twin.

    python tools/ablation.py checkpoint=outputs/quickstart_shapes/model_final.pth \\
        context_checkpoint=outputs/quickstart_context/model_final.pth
"""
import hydra
from omegaconf import DictConfig

from detectres.apps.ablation import run_ablation
from detectres.config import CONFIG_DIR


@hydra.main(config_path=str(CONFIG_DIR), config_name="ablation", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_ablation(cfg)


if __name__ == "__main__":
    main()
