const https = require("https");
// rejectUnauthorized: false is what we must never write
const agent = new https.Agent({ rejectUnauthorized: true, ca: fs.readFileSync("ca.crt") });
