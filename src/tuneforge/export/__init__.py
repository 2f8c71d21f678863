"""tuneforge.export: a run directory -> a deployable artifact that provably behaves the same.

  run.py          export_run: plan, load, reference, build, reload, validate, publish
  merge.py        merge_and_unload (QLoRA: onto the dequantized base), HF / int4 saving, reloading
  gguf_writer.py  GGUF with the gguf package: llama / gemma3 tensors, tokenizer, template
  ollama.py       a Modelfile TEMPLATE measured from the chat template and proven equal
  gotemplate.py   renders the Go-template subset Ollama TEMPLATEs use (for that proof)
  validate.py     agreement + logit differences of the reloaded export vs the trained model
  card.py         MODEL_CARD.md and tuneforge.json, from the run, its eval and the validation
  tiny_gguf.py    a tiny llama written as GGUF by gguf_writer, for the GGUF-loading tests

Depends on data, models, train and (for predictions identical to `tuneforge eval`) eval.predict;
never on serve or cli.
"""
