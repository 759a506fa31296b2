
èshort