//! Table responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the columns kubectl shows for
//! each kind and one row's cells. (Being written.)
