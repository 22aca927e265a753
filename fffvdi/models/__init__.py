"""The networks: the FFF-VDI UNet (`unet`: SVD's UNet with a propagation module after conv_in), the propagation modules
and their registry (`propagation`), loading SVD from the hub or a folder (`loading`, `hub`), tiny test models (`tiny`)."""
