# Run with a venv that has torch; only benign tensors are saved. Output: data.pkl of each zip.
# Generates benign data.pkl fixtures with real torch.save (trusted machine, benign tensors only).
import torch, io, zipfile, sys
class M(torch.nn.Module):
    def __init__(s):
        super().__init__(); s.l=torch.nn.Linear(2,3)
torch.manual_seed(0)
sd=M().state_dict()
sd['shared']=sd['l.weight'][1]
sd['f8']=torch.zeros(2,dtype=torch.float8_e4m3fn)
sd['bf']=torch.zeros(2,2,dtype=torch.bfloat16)
sd['empty']=torch.zeros(0,3)
sd['u16']=torch.zeros(3,dtype=torch.uint16)
sd['p']=torch.nn.Parameter(torch.ones(2))
sd['t']=torch.ones(4,2).t()
out=[]
for proto in (2,4,5):
    b=io.BytesIO(); torch.save(sd,b,pickle_protocol=proto)
    z=zipfile.ZipFile(io.BytesIO(b.getvalue()))
    d=z.read('archive/data.pkl')
    open(f'crates/weights/tests/pickle_fixtures/state_dict_p{proto}.pkl','wb').write(d)
# a raw pickle via pickle (not torch) for a plain list, protocol 0
import pickle
open('crates/weights/tests/pickle_fixtures/list_p0.pkl','wb').write(pickle.dumps(["a","b","c", 1, 2.5, None, True, {"k": (1,2)}], protocol=0))
open('crates/weights/tests/pickle_fixtures/list_p1.pkl','wb').write(pickle.dumps(["a","b","c", 1, 2.5, None, True, {"k": (1,2)}], protocol=1))
