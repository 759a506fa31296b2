
idJunknown bytesPY12345678e1234c