"""The zoo in timm's own Hub layout: ``model.safetensors``, ``config.json`` and a model card per tag.

timm reads that layout through ``timm.create_model("local-dir:DIR")`` and ``"hf-hub:REPO"``; its
``save_for_hf``, ``push_to_hf_hub`` and ``generate_readme`` write it. What is DiNAT's own lives here:
the published weights come in through this project's converters (either published format), the
config names the architecture's every defining argument, and the card says what the model is, how
fast this project measured it, which attention backends give the same numbers, and how to use it.

    python -m dinat_timm.hub export dinat_tiny.in1k out/dinat_tiny.in1k
    python -m dinat_timm.hub export --all out/ --dry-run
    python -m dinat_timm.hub push dinat_tiny.in1k me/dinat_tiny.in1k --dry-run
"""
from .card import CITATION, model_card
from .check import check_config, check_export, create_model
from .export import FILES, Export, check_output, export, model_args, push
from .tags import HubError, pretrained_tags, split_tag, tag_table

__all__ = ["CITATION", "Export", "FILES", "HubError", "check_config", "check_export", "check_output", "create_model",
           "export", "model_args", "model_card", "pretrained_tags", "push", "split_tag", "tag_table"]
