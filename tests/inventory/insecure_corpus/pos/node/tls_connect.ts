import * as tls from "tls";

const socket = tls.connect({
  host: "mq.internal",
  port: 5671,
  rejectUnauthorized: false,
});
