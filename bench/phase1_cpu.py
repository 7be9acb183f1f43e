import json
import sys

from tinythinker.phase1 import Phase1Config, train_phase1

cfg = Phase1Config(data="csqa", data_dir="../shared/data", student="smollm2-135m",
                   stage_type=sys.argv[1], run=sys.argv[2], interval=20, max_steps=int(sys.argv[3]),
                   batch_size=16, eval_batch_size=16, lr=5e-4, lr_scheduler="cosine", warmup_ratio=0.1,
                   lora_r=16, answer_format="text_letter", restrict_answer="score",
                   max_source_length=256, eval_limit=int(sys.argv[5]), eval_steps=int(sys.argv[4]), logging_steps=10)
r = train_phase1(cfg)
print(json.dumps({k: v for k, v in r.to_dict().items() if k != "evals"}, indent=2))
