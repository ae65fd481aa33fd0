"""Talks to a running lambda-ml with Triton's Open Inference Protocol client (tritonclient[http]) and prints, as
JSON, what it got back. Used by tests/kserve.rs: python kserve.py HOST:PORT MODEL."""
import json
import sys

import numpy as np
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

url, name = sys.argv[1], sys.argv[2]
client = http.InferenceServerClient(url=url)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(name),
    "unknown_model_ready": client.is_model_ready("no-such-model"),
}
meta = client.get_model_metadata(name)
out["versions"] = meta["versions"]
out["inputs"] = [[i["name"], i["datatype"]] for i in meta["inputs"]]


def tensor(name, datatype, values):
    t = http.InferInput(name, [len(values)], datatype)
    t.set_data_from_numpy(values, binary_data=False)  # the server speaks JSON tensors only
    return t


inputs = [
    tensor("amount", "FP64", np.array([20.0, 80.0])),
    tensor("country", "BYTES", np.array([b"fr", b"us"], dtype=object)),
    tensor("mobile", "BOOL", np.array([True, False])),
    tensor("session_seconds", "FP64", np.array([30.0, 300.0])),
]
wanted = [http.InferRequestedOutput(n, binary_data=False) for n in ["label", "probabilities"]]
result = client.infer(name, inputs, request_id="r-1", outputs=wanted)
out["id"] = result.get_response()["id"]
out["label"] = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").tolist()]
out["probabilities"] = result.as_numpy("probabilities").tolist()
out["classes"] = result.get_output("probabilities")["parameters"]["classes"]
try:
    client.infer(name, [tensor("amount", "FP64", np.array([1.0, 2.0])), tensor("colour", "BYTES", np.array([b"red", b"blue"], dtype=object))])
    out["error"] = None
except InferenceServerException as e:
    out["error"] = e.message()
print(json.dumps(out))
