wget --no-check-certificate https://mirror.internal/file.tar.gz
