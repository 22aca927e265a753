from setuptools import find_packages, setup

setup(
    name="fffvdi",
    version="0.1.0",
    description="FFF-VDI: video inpainting by first-frame filling with Stable Video Diffusion",
    packages=find_packages(include=["fffvdi", "fffvdi.*"]),
    python_requires=">=3.9",
    install_requires=[
        line.split("#")[0].strip()
        for line in open("requirements.txt", encoding="utf-8")
        if line.split("#")[0].strip() and not line.startswith("pytest")
    ],
)
