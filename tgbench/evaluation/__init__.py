"""A trained run, used: loaded, scored on text, evaluated by tasks, sampled from, exported.

    loaded.py    load_run: a run directory back as its adapter, corpus and model (a `tgbench.task.LoadedRun`)
    scoring.py   documents and text through `Adapter.score`: every content token's log-probability
    evaluate.py  one task on one run -> eval/<task>.json, recomputed only when stale
    lmeval.py    lm-eval: a run as an lm-eval model, an lm-eval task as a Task, the tgbench-lm-eval command
    sample.py    text generated from a run (sentence by sentence for TG-family models)
    export.py    a GPT-2 run as a Hugging Face checkpoint
"""
