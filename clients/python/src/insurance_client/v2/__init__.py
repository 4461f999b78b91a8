"""V2 gRPC messages generated from grpc_predict_v2.proto (proto package ``insurance_client.v2``): internal."""
