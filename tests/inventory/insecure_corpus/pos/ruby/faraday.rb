require "faraday"

conn = Faraday.new(url: "https://crm.internal", ssl: { verify: false })
