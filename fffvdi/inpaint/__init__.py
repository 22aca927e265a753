"""Inference: a video and its masks in, the inpainted video out. `config`/`checks` (the inference config), `conditioner`
(flows, VAE, CLIP), `first_frame_fill`, `canvas`, `pipeline` (one window), `windows` (long videos), `region` (crops),
`methods` (the `METHODS` registry), `batch` (many videos), `partial` (resumable outputs)."""
