sluice-checkpoint 1
s 1 9223372036854775808
crc32 8fbdc062
