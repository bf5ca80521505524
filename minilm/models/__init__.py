"""Loading real pretrained weights into minilm's modules: Hugging Face names mapped to
minilm's (one visible table, ``HF_NAME_MAP``), shapes checked before anything is
written, safetensors only. ``load_pretrained("all-MiniLM-L6-v2")`` ->
``(model, tokenizer)`` with ``model.encode(texts)`` the sentence embeddings."""

from .pretrained import (
    HF_IGNORED,
    HF_MLM_HEAD_MAP,
    HF_NAME_MAP,
    PRETRAINED,
    cosine_table,
    expand_name_map,
    load_hf_state_dict,
    load_pretrained,
    load_weights,
    read_safetensors_arrays,
    read_text_lines,
    resolve_model_dir,
)

__all__ = ["HF_IGNORED", "HF_MLM_HEAD_MAP", "HF_NAME_MAP", "PRETRAINED", "cosine_table",
           "expand_name_map", "load_hf_state_dict", "load_pretrained", "load_weights",
           "read_safetensors_arrays", "read_text_lines", "resolve_model_dir"]
