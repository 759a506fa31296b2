sluice-checkpoint 1
s 1 2
crc32 174afb3f
