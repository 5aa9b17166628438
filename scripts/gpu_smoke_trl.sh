#!/usr/bin/env bash
# A short real GRPO run through `rtpo-data train trl` on one GPU: builds the example curriculum with
# the Qwen3 tokenizer and trains a small randomly initialized Qwen2-architecture policy for a few
# steps (machines without a model hub cannot load pretrained weights), logging the curriculum stage,
# hint tokens and completion lengths per step. Usage: bash scripts/gpu_smoke_trl.sh OUT_DIR
set -euo pipefail
out=${1:-/tmp/rtpo-gpu}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
cd "$out"  # outside the checkout, so the installed package (with rtpo_data.cli mapped) is imported
python3 -m rtpo_data.cli.main build "$repo/rtpo_data/examples/mixed_math.jsonl" --out "$out/cur" --tokenizer offline:qwen3 \
  --stages 4 --total-steps 16 --overwrite
python3 - "$out" <<'PY'
import sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from rtpo_data.tokenizer import load_tokenizer
tok = load_tokenizer("offline:qwen3")
torch.manual_seed(0)
cfg = Qwen2Config(vocab_size=len(tok), hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
Qwen2ForCausalLM(cfg).save_pretrained(sys.argv[1] + "/model")
tok.save_pretrained(sys.argv[1] + "/model")
PY
python3 -m rtpo_data.cli.main train trl --curriculum "$out/cur" --model_name_or_path "$out/model" \
  --output_dir "$out/run" --max_steps 16 --per_device_train_batch_size 16 --num_generations 8 \
  --max_completion_length 128 --learning_rate 1e-5 --bf16 true --logging_steps 1 --report_to none \
  --save_strategy no --reward_funcs rtpo_data.rewards.format_reward --disable_tqdm true
