"""The training kit every trainer shares (tokenizer, LM, CLIP, prior, decoder).

- ``captions``: caption tables, the MiniLM caption cache, caption sampling
- ``images``: uint8 images to model input, random translation
- ``optim``: AdamW groups, warm-up + cosine LR schedules planned to a time limit, one step
- ``state``: optimizer state and step/history beside a checkpoint (safetensors + JSON)
- ``plots``: loss-curve PNGs
- ``loop``: a run's clock (time limit, LR plan) and cadences
- ``components``: the trained components a run reads (a directory, a bundle or a parent)
- ``cli``: the arguments and the start of ``run`` that the train and eval commands share
"""
