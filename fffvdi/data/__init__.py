"""Data: training clips in the YouTube-VOS layout (`youtube_vos`), training hole masks (`masks`), synthetic datasets
(`synthetic`) and real-motion-like scenes with ground truth (`motion_scenes`)."""
