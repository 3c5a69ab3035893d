#!/usr/bin/env python
"""Print the paper's ablation table (rows baseline, +refinement, +context, +multi-scale, +all; columns
AP, AP50, AP75, s/image) for a model and its context-trained twin.

    python tools/ablation.py checkpoint=outputs/quickstart_shapes/model_final.pth \\
        context_checkpoint=outputs/quickstart_context/model_final.pth
"""
from detectres.apps.commands import run_command

if __name__ == "__main__":
    run_command("detectres-ablation")
