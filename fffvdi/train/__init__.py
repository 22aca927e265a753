"""Fine-tuning: `loop.train` reads top to bottom; `steps` is one step (conditioning, loss, optimizer); `setup`, `data`,
`flows`, `cache`, `lora`, `save`/`checkpointing`, `validation` and `logs` are the pieces it calls; `config`/`checks`
its config."""
