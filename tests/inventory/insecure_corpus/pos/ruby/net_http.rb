require "net/http"

http = Net::HTTP.new("reports.internal", 443)
http.use_ssl = true
http.verify_mode = OpenSSL::SSL::VERIFY_NONE
