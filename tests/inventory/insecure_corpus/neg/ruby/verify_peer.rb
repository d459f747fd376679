http.verify_mode = OpenSSL::SSL::VERIFY_PEER
# VERIFY_NONE is banned here
