sluice-checkpoint 1
s 2147483648 1
crc32 1a2ee95f
